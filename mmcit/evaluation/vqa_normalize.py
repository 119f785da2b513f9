"""EvalAI / m4c answer normalisation, as the TextVQA evaluator of CoIN and LLaVA applies it.

TextVQA accuracy is only comparable with published numbers if predictions and gold answers are
normalised exactly like the original evaluator does, so this module reproduces its behaviour
character for character, oddities included:

1. ``_tokenize``: lower-case; delete every "," and "?"; turn "'s" into " 's"; strip.
2. newlines and tabs become spaces; strip again.
3. ``process_punctuation``: each character of ``PUNCTUATIONS`` is deleted when it touches a space
   anywhere in the text (or when the text has a digit-comma-digit group), otherwise it becomes a
   space. The test looks at the whole text, not at each occurrence: one " -" anywhere deletes every
   hyphen ("well-known - yes" -> "wellknown yes") while "well-known" alone gives "well known".
   Then periods not followed by a digit are deleted, at most 32 of them: the original passes
   ``re.UNICODE`` (== 32) as the positional ``count`` argument of ``Pattern.sub``.
4. ``process_digit_article``: lower-case, split on whitespace, number words "none".."ten" become
   digits, the articles "a", "an", "the" are dropped, and words found in ``CONTRACTIONS`` are
   replaced; the words are joined by single spaces.

Because step 1 already deletes every comma, the comma condition of step 3 can never fire inside
``normalize_answer``; it is kept in ``process_punctuation`` because that function is also
meaningful (and tested) on its own.
"""
from __future__ import annotations

import re

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_MAP",
    "PERIOD_STRIP_MAX",
    "PUNCTUATIONS",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
]

# Contractions written without their apostrophe (and a few variants) -> the canonical spelling, so
# that "dont" and "don't" compare equal. Entries are grouped by the word they start with.
# Faithfulness notes:
# * "somebody'd" maps to "somebodyd" (apostrophe removed, the reverse of every other entry); the
#   original table has this entry, and removing it would change scores.
# * The keys with capitals ("Im", "Ive", "Id've", "I'dve") can never match because the text is
#   lower-cased first; they are kept so the table stays a faithful description of the evaluator.
# * Keys that contain "'s" ("let's", "she's", "ow's'at", ...) cannot match either, since "'s" is
#   split off into its own word before this lookup.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't",
    "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}

# Only whole words are mapped, so "twenty" or "2nd" stay as they are.
NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Order matters only for readability: each character is handled independently of the others,
# but every decision is taken on the text as it was *before* any of them was replaced.
PUNCTUATIONS: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)

# The original pattern is r"(?!<=\d)(\.)(?!\d)": its first group was meant as a look-behind but is
# written as a look-ahead for the literal "<=" and a digit, which can never match at a ".", so in
# effect a period is removed unless a digit follows it ("3.5" keeps its point, "1." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
# The original calls PERIOD_STRIP.sub("", text, re.UNICODE); re.UNICODE lands in `count`.
PERIOD_STRIP_MAX: int = int(re.UNICODE)  # == 32


def _tokenize(text: str) -> str:
    """First pass of the evaluator: lower-case, drop commas and question marks, split off "'s"."""
    text = text.lower()
    text = text.replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def process_punctuation(text: str) -> str:
    """Delete or blank out punctuation and strip periods, exactly as the EvalAI evaluator does.

    A punctuation character is deleted if it is written next to a space somewhere in ``text`` (or
    if ``text`` contains a digit-comma-digit group), and replaced by a space otherwise. Periods not
    followed by a digit are then removed, at most ``PERIOD_STRIP_MAX`` (32) of them.
    """
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCTUATIONS:
        # The test is made on the original text, not on `out`: that is what makes one " -"
        # anywhere delete every hyphen, and it must stay so to reproduce the reference scores.
        if (p + " " in text) or (" " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_MAX)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, canonicalise contractions.

    Words are split on any whitespace and re-joined with single spaces.
    """
    words = []
    for word in text.lower().split():
        word = NUMBER_MAP.get(word, word)
        # Articles are tested after the number mapping, as in the original (no number word is an
        # article, so the order does not change results; it is kept for fidelity).
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Normalise one answer (prediction or gold) the way the EvalAI / m4c TextVQA evaluator does.

    Examples: "Two" -> "2", "the dog." -> "dog", "dont" -> "don't", "x-ray" -> "x ray".
    See the module docstring for the full list of steps and quirks.
    """
    text = _tokenize(text)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = process_punctuation(text)
    return process_digit_article(text)
