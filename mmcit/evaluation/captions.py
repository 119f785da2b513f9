"""Caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D; METEOR when Java is there) as coco-caption computes them.

The reference (``pycocoevalcap.eval.COCOEvalCap``, used by UCIT's caption evaluator) tokenizes every
caption with the Java Stanford PTBTokenizer (CoreNLP 3.4.1, ``-preserveLines -lowerCase``), drops
punctuation tokens, then scores with BLEU (closest reference length), METEOR 1.5 (a Java jar),
ROUGE-L (beta 1.2) and CIDEr-D (sigma 6, x10, document frequencies from the evaluated references).

Here the tokenizer is ``ptb_tokenize``, a Python re-statement of the PTB rules that matter for
captions (lower-casing, splitting punctuation, clitics and ``n't``, PTB's quote and bracket tokens),
so no Java runs by default. BLEU, ROUGE-L and CIDEr-D are pycocoevalcap's own pure-Python scorers
(imported lazily: the ``captions`` extra). METEOR has no Python equivalent of METEOR 1.5: it is
computed only when asked for, with pycocoevalcap's Java wrapper, and fails with a clear error
without Java. docs/suites.md reports how often the Python tokenizer agrees with the Java one.
"""
from __future__ import annotations

import re
import shutil
from typing import Sequence

from mmcit.errors import ConfigError

#: Tokens that coco-caption removes after tokenization (pycocoevalcap's PUNCTUATIONS list).
PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
                         "-", "--", "...", ";"])
#: The seven numbers of UCIT's caption report, in its order.
CAPTION_METRICS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
WITHOUT_JAVA: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

# Contractions PTB splits in two words (case-insensitive; the text is lower-cased first anyway).
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me")}
_CLITIC = re.compile(r"^(.+?)('s|'re|'ve|'ll|'d|'m|n't)$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+([.,:/]\d+)*|\.\d+)$")
_ABBREV = re.compile(r"^([a-z]\.){2,}$|^(mr|mrs|ms|dr|st|jr|sr|vs|etc|inc|co|ltd|no|mt|ft)\.$", re.IGNORECASE)
# An upper-case acronym (or "etc.") ending the text gets a sentence-final "." of its own.
_UPPER_ACRONYM = re.compile(r"^([A-Z]\.){2,}$")
_QUOTES = {"\u201c": "``", "\u201d": "''", "\u2018": "`", "\u2019": "'", "\u00ab": "``", "\u00bb": "''"}
# PTB's bracket tokens, lower-cased as -lowerCase leaves them: coco-caption's punctuation list has
# only the upper-case forms, so the reference keeps these tokens (and so does mmcit).
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Characters that always stand alone as tokens (a run of ? and ! is one token).
_ALONE = set("?!;,()[]{}\"%$&*+=<>|~^\u00b0") | set(_QUOTES)
# Characters PTB rewrites before splitting (dashes, the ellipsis, currency signs).
_NORMALISE = {"\u2014": " -- ", "\u2026": " ... ", "\u20ac": " $ ", "\u00a3": " # "}
_RUN = set("?!")


def _split_chunk(chunk: str) -> list[str]:
    """Tokens of one whitespace-free chunk (already lower-cased)."""
    tokens: list[str] = []
    word = ""
    i = 0
    while i < len(chunk):
        c = chunk[i]
        if c in _RUN:
            j = i
            while j < len(chunk) and chunk[j] in _RUN:
                j += 1
            if word:
                tokens.append(word)
            tokens.append(chunk[i:j])
            word = ""
            i = j
            continue
        if c == "#" and not chunk[i + 1:i + 2].isalpha():  # "#1" splits, a hashtag does not
            if word:
                tokens.append(word)
            tokens.append(c)
            word = ""
        elif c in _ALONE and not (c == "," and word and _NUMBER.match(word) and i + 1 < len(chunk)
                                and chunk[i + 1].isdigit()):
            if word:
                tokens.append(word)
            tokens.append(c)
            word = ""
        elif c == "." and chunk.startswith("...", i):
            if word:
                tokens.append(word)
            tokens.append("...")
            word = ""
            i += 3
            continue
        elif c == "-" and chunk.startswith("--", i):
            if word:
                tokens.append(word)
            tokens.append("--")
            word = ""
            i += 2
            continue
        else:
            word += c
        i += 1
    if word:
        tokens.append(word)
    return tokens


def _finish_word(word: str, last: bool) -> list[str]:
    """Split a word's edges: leading quotes, trailing quotes, colons, hyphens and the final period
    (kept on numbers and abbreviations; an acronym ending the text gets an extra "."), clitics."""
    if all(not ch.isalnum() for ch in word) or word == "'n'":
        return [word]  # "...", "--", a lone quote, PTB's "'n'"
    head: list[str] = []
    tail: list[str] = []
    while word[:1] in ("'", "`") and len(word) > 1 and not _CLITIC.match(word):
        head.append("`")  # an opening single quote (punctuation either way)
        word = word[1:]
    while len(word) > 1:
        if word[-1] in (":", "'") or (word[-1] == "-" and not word[:-1].endswith("-")):
            tail.insert(0, word[-1])
            word = word[:-1]
        elif word[-1] == "." and not _NUMBER.match(word):
            if _ABBREV.match(word):
                if last and (word.lower() == "etc." or _UPPER_ACRONYM.match(word)):
                    tail.insert(0, ".")
                break
            tail.insert(0, ".")
            word = word[:-1]
        else:
            break
    if word.lower() in _SPLIT_WORDS:
        return head + list(_SPLIT_WORDS[word.lower()]) + tail
    body: list[str] = []
    m = _CLITIC.match(word)
    while m:  # "shouldn't've" -> should n't 've
        body.insert(0, m.group(2))
        word = m.group(1)
        m = _CLITIC.match(word)
    return head + [word] + body + tail


def ptb_tokenize(text: str) -> list[str]:
    """The lower-cased PTB tokens of one caption, before punctuation removal.

    Rules: lower-case; split on whitespace; ``?!;,()[]{}"%$#@&*+=<>|`` stand alone (a comma inside a
    number stays); ``...`` and ``--`` are tokens; a word's trailing period is split off unless the
    word is a number or a known abbreviation in mid-sentence; clitics (``'s 're 've 'll 'd 'm n't``)
    and ``cannot``/``gonna``/``gotta``/``wanna`` are split; double quotes become PTB's `````` and
    ``''``; brackets become ``-LRB-``...
    """
    for char, replacement in _NORMALISE.items():
        text = text.replace(char, replacement)
    chunks = text.replace("\n", " ").split()
    raw: list[str] = []
    for chunk in chunks:
        raw += _split_chunk(chunk)
    out: list[str] = []
    quote_open = True
    words = [t for t in raw if t]
    for k, tok in enumerate(words):
        if tok == '"':
            out.append("``" if quote_open else "''")
            quote_open = not quote_open
        elif tok in _QUOTES:
            out.append(_QUOTES[tok])
        elif tok in _BRACKETS:
            out.append(_BRACKETS[tok])
        elif len(tok) == 1 and tok in _ALONE:
            out.append(tok)
        else:
            out += _finish_word(tok, last=k == len(words) - 1)
    return [t.lower() for t in out]


def coco_tokenize(text: str) -> str:
    """A caption as coco-caption scores it: PTB tokens without punctuation, joined by spaces."""
    return " ".join(t for t in ptb_tokenize(text) if t not in PUNCTUATION)


def java_available() -> bool:
    """True when a ``java`` executable is on the PATH (METEOR needs it)."""
    return shutil.which("java") is not None


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                   metrics: Sequence[str] = WITHOUT_JAVA) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus scores (as fractions, coco-caption's scale) and per-caption scores of ``metrics``.

    ``predictions[i]`` is scored against ``references[i]`` (each a non-empty list). Every caption is
    tokenized with ``coco_tokenize``. ``METEOR`` needs Java and pycocoevalcap's jar.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ConfigError(f"unknown caption metric(s) {unknown}; known: {', '.join(CAPTION_METRICS)}")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} captions for {len(references)} reference sets; need equal, > 0")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as e:
        raise ConfigError("caption metrics need pycocoevalcap: pip install 'mmcit[captions]'") from e
    # Image ids 1..N in order, as UCIT's evaluator numbers the answer lines.
    res = {i + 1: [coco_tokenize(p)] for i, p in enumerate(predictions)}
    gts = {i + 1: [coco_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    if any(not refs for refs in gts.values()):
        raise ValueError("every caption needs at least one reference")
    corpus: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    wanted = set(metrics)
    if wanted & {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"}:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            corpus[f"Bleu_{n + 1}"], per[f"Bleu_{n + 1}"] = float(score[n]), [float(x) for x in scores[n]]
    if "METEOR" in wanted:
        corpus["METEOR"], per["METEOR"] = _meteor(gts, res)
    if "ROUGE_L" in wanted:
        score, scores = Rouge().compute_score(gts, res)
        corpus["ROUGE_L"], per["ROUGE_L"] = float(score), [float(x) for x in scores]
    if "CIDEr" in wanted:
        score, scores = Cider().compute_score(gts, res)
        corpus["CIDEr"], per["CIDEr"] = float(score), [float(x) for x in scores]
    return {m: corpus[m] for m in metrics}, {m: per[m] for m in metrics}


def _meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    if not java_available():
        raise ConfigError("METEOR needs Java (METEOR 1.5 is a Java jar); use a caption scorer without "
                          "METEOR (caption_cider, caption_average6) or install a Java runtime")
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, scores = meteor.compute_score(gts, res)
    finally:
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    return float(score), [float(x) for x in scores]
