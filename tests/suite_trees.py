"""Tiny trees in the layouts of UCIT, MLLM-DCL and MLLM-ACL (MCITlib's) and of the general-skill sets,
written by the tests. Record shapes follow the real releases (docs/suites.md, "Layouts"): ids of
mixed types, zero-padded VizWiz ids, caption references in a COCO file, OCR gold lists, Sci image
prefixes, ACL test folders beside the train folders, a multi-image APP record."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
CAPTION = "What is happening in the image?\nGenerate a brief caption for the image."


def image(path: Path, shade: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (shade, 255 - shade, (shade * 7) % 256)
    im = Image.new("RGB", (20, 16), colour)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")


def conv(rid, img, question: str, answer: str) -> dict:
    return {"id": rid, "image": img, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                                       {"from": "gpt", "value": answer}]}


def _task(root: Path, images: Path, folder: str, train: list[tuple], test: list[dict], *, train_name="train.json",
          test_name="test.json", test_folder: str | None = None, image_base: str = "") -> None:
    """Write train records (id, image, question, answer), test records, and every image named."""
    for k, (rid, img, q, a) in enumerate(train):
        for rel in img if isinstance(img, list) else [img]:
            image(images / image_base / rel, 10 + 20 * k)
    dump(root / folder / train_name, [conv(*t) for t in train])
    for k, rec in enumerate(test):
        image(images / (image_base if test_folder is None else test_folder) / rec["image"], 200 - 30 * k)
    dump(root / (test_folder or folder) / test_name, test)


def write_ucit(root: Path, images: Path | None = None) -> None:
    """UCIT's six tasks (MCITlib v2/v3 names); images under ``images`` (default: ``root``)."""
    images = images or root
    q_imr = "What is the object in the image?" + SHORT
    _task(root, images, "ImageNet-R",
          [(f"imr_{k}", f"ImageNet-R/train/n0144/art_{k}.jpg", q_imr, a) for k, a in enumerate(["Centipede", "Goldfish"])],
          [{"question_id": str(k + 1), "image": f"ImageNet-R/test/n0144/sketch_{k}.jpg", "text": q_imr, "answer": a}
           for k, a in enumerate(["Centipede", "Goldfish", "Hen"])], test_name="test_3000.json")
    q_ax = "Which dataset shows a clearer deviation?A. Sogou-08\nB. Sogou-11\nRationale:In (a), ...\n" + LETTER.strip()
    _task(root, images, "ArxivQA", [("ax_0", "ArxivQA/images/1911.02852_1.jpg", q_ax, "A")],
          [{"question_id": "1046", "image": "ArxivQA/images/2001.1_2.jpg", "text": q_ax, "answer": "A"},
           {"question_id": "1047", "image": "ArxivQA/images/2001.1_3.jpg", "text": q_ax, "answer": "B"}],
          train_name="train_4w.json", test_name="test_3000.json")
    _captions(root, images, "VizWiz-caption", "VizWiz/train/VizWiz_train_{k:08d}.jpg",
              "VizWiz/val/VizWiz_val_{k:08d}.jpg", lambda k: f"{k:08d}", train_name="train.json")
    q_icon = "The first picture is a crab. Which picture is fifth?\n0. bucket\n1. boat" + LETTER
    _task(root, images, "IconQA", [("ic_0", "IconQA/iconqa_data/iconqa/train/choose_txt/9/image.png", q_icon, "0")],
          [{"question_id": "60220", "image": "IconQA/iconqa_data/iconqa/test/choose_txt/60220/image.png",
            "text": q_icon, "answer": "1"}], test_name="test_3000.json")
    q_clevr = "Subtract all purple blocks. How many gray cylinders are left?" + SHORT
    _task(root, images, "CLEVR-Math", [("cl_0", "CLEVR/images/train/CLEVR_train_021226.png", q_clevr, "2")],
          [{"question_id": "9187", "image": "CLEVR/images/val/CLEVR_val_000001.png", "text": q_clevr, "answer": "1"}],
          train_name="train_4w.json", test_name="test_3000.json")
    _captions(root, images, "Flickr30k-cap", "Flickr30k/train/{k}2250713.jpg", "Flickr30k/val/{k}0002456.jpg",
              lambda k: f"{k}0002456", train_name="train_brief_4w.json")


REFERENCES = [["a dog runs on the grass", "a brown dog running", "the dog is running outside",
               "a dog playing on a lawn", "dog running across a field"],
              ["a can of soup on a table", "a red can of tomato soup", "soup can on a counter",
               "a close up of a soup can", "a can of campbell's soup"]]


def _captions(root: Path, images: Path, folder: str, train_img: str, test_img: str, qid, train_name: str) -> None:
    train = [(f"cap_{k}", train_img.format(k=k), CAPTION, REFERENCES[k][0]) for k in range(2)]
    test = [{"question_id": qid(k), "image": test_img.format(k=k), "text": CAPTION} for k in range(2)]
    _task(root, images, folder, train, test, train_name=train_name, test_name="test_3000.json")
    anns = [{"image_id": i + 1, "id": 10 * i + j, "caption": c} for i, refs in enumerate(REFERENCES)
            for j, c in enumerate(refs)]
    dump(root / folder / "val_coco_type_3000.json", {"images": [{"id": i + 1} for i in range(2)], "annotations": anns})


def write_dcl(root: Path) -> None:
    """MLLM-DCL's five domains, each folder with train.json, test.json and images/."""
    rs = "How many rectangular retail areas are there in the image?"
    _task(root, root, "RS", [(0, "images/1.png", rs + " " + SHORT, "1")],
          [{"question_id": 1027618, "image": "images/10272.png", "text": rs, "answer": "1"},
           {"question_id": 1027619, "image": "images/10273.png", "text": rs, "answer": "3.5"}], image_base="RS")
    _task(root, root, "Med", [("0", "images/m0.png", "is hand present?", "yes")],
          [{"question_id": "0", "image": "images/m1.png", "text": "is hand present?", "answer": "yes"}],
          image_base="Med")
    ad = "What are objects to the back of the ego car? Objects are encoded using <c,CAM,[cx,cy]>."
    _task(root, root, "AD", [("ad0", "images/a0.png", ad, "There is a car.")],
          [{"question_id": "ad1", "image": "images/a1.png", "text": ad, "answer": "There is a truck."}],
          image_base="AD")
    sci = "Which is a producer?\nA.chimpanzee\nB.fruits" + LETTER
    _task(root, root, "Sci", [("s0", "images/AI2D_0.png", sci, "B")],
          [{"question_id": "s1", "image": "images/AI2D_1.png", "text": sci, "answer": "B"},
           {"question_id": "s2", "image": "images/MapQA_2.png", "text": "Which states have the highest value?",
            "answer": "Texas,Ohio"}], image_base="Sci")
    fin = "Based on the candlestick chart, is the trend up? A. up B. down"
    _task(root, root, "Fin", [("f0", "images/f0.png", fin, "A")],
          [{"question_id": "f1", "image": "images/f1.png", "text": fin, "answer": "A"},
           {"question_id": "f2", "image": "images/f2.png", "text": "Is the price rising?", "answer": "Yes"}],
          image_base="Fin")


def write_acl(root: Path) -> None:
    """MLLM-ACL's four abilities: train in <T>/, tests in <T>_test/ (VP: CV-Benchv2/)."""
    ocr = "what is the value for 'CASE TYPE:'? Answer this question using the text in the image directly."
    _task(root, root, "OCR", [("o0", "images/o0.png", ocr, "Asbestos")],
          [{"question_id": "OCR_test_777", "image": "images/FUNSD/82491256.png", "text": ocr,
            "answer": ["Asbestos", "ASBESTOS"], "answer_type": "Key Information Extraction"}],
          image_base="OCR", test_folder="OCR_test")
    math = "Hint: Please answer the question requiring an integer answer.\nQuestion: how many cups?"
    _task(root, root, "Math", [("m0", "images/m0.png", math, "2")],
          [{"question_id": "testmini_1", "image": "images/1.png", "text": math, "answer": "2",
            "question_type": "free_form", "answer_type": "integer"},
           {"question_id": "testmini_2", "image": "images/2.png", "text": "Which shape?\n(A) circle\n(B) square",
            "answer": "square", "question_type": "multi_choice", "answer_type": "text",
            "choices": ["circle", "square"], "answer_option": "B"}],
          image_base="Math", test_folder="Math_test")
    vp = "Answer in natural language. How many billboards are in the image? Choose between: 1, 0, 2, or 3."
    _task(root, root, "VP", [("v0", "img/2D/count/ade_1.png", "How many cars?", "2")],
          [{"question_id": "CVBench_2D_132", "image": "img/2D/count/ade20k_365.png", "text": vp, "answer": "1",
            "type": "2D", "task": "Count"}], image_base="VP", test_folder="CV-Benchv2")
    app = "You are an assistant in Android GUI navigation. Which button?\nA. back\nB. home"
    _task(root, root, "APP", [("p0", ["images/p0.png", "images/p0b.png"], app, "B")],
          [{"question_id": "ALL_10475", "image": "images/p1.png", "text": app, "answer": "B"}],
          image_base="APP", test_folder="APP_test")


def write_general(root: Path) -> dict:
    """Tiny MME (two categories), POPE (two splits), SEED and MMBench files; returns their paths."""
    mme = root / "MME_Benchmark_release_version"
    rows = []
    for cat, yn in (("existence", False), ("artwork", True)):
        for k in range(2):
            img = mme / cat / ("images" if yn else "") / f"{cat}{k}.jpg"
            image(img, 40 * k + (100 if yn else 0))
            gt = mme / cat / ("questions_answers_YN" if yn else "") / f"{cat}{k}.txt"
            qs = [(f"Is there a dog in {cat} {k}?", "Yes"), (f"Is there a cat in {cat} {k}?", "No")]
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_text("".join(f"{q} Please answer yes or no.\t{a}\n" for q, a in qs), encoding="utf-8")
            # LLaVA's file: the short-answer sentence instead of MME's own, image paths as in the release
            rel = f"{cat}/images/{img.name}" if yn else f"{cat}/{img.name}"
            rows += [{"question_id": rel, "image": rel, "category": cat,
                      "text": q + ("\nAnswer the question using a single word or phrase." if yn else
                                   " Please answer yes or no.")} for q, _ in qs]
    (root / "llava_mme.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    coco = root / "val2014"
    pope_rows, labels = [], {"adversarial": ["yes", "no", "yes"], "random": ["no", "yes"]}
    for split, golds in labels.items():
        lines = []
        for k, g in enumerate(golds):
            name = f"COCO_val2014_{split}{k}.jpg"
            image(coco / name, 30 * k)
            pope_rows.append({"question_id": f"{split}{k}", "image": name, "text": f"Is there a {split} {k}?",
                              "category": split})
            lines.append(json.dumps({"question_id": k, "image": name, "label": g}))
        (root / "pope" / f"coco_pope_{split}.json").parent.mkdir(parents=True, exist_ok=True)
        (root / "pope" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "llava_pope_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pope_rows), encoding="utf-8")
    seed_q = [{"question_id": str(k), "image": f"SEED-Bench-image/{k}.jpg",
               "text": f"Question {k}?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."}
              for k in range(3)]
    for k in range(3):
        image(root / "SEED-Bench-image" / f"{k}.jpg", 50 * k)
    (root / "llava-seed-bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed_q), encoding="utf-8")
    dump(root / "SEED-Bench.json", {"question_type": {"Scene Understanding": 1, "Instance Identity": 2},
                                    "questions": [{"question_id": "0", "answer": "A", "question_type_id": 1, "data_type": "image"},
                                                  {"question_id": "1", "answer": "B", "question_type_id": 1, "data_type": "image"},
                                                  {"question_id": "2", "answer": "A", "question_type_id": 2, "data_type": "image"},
                                                  {"question_id": "9", "answer": "C", "question_type_id": 2, "data_type": "video"}]})
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (9, 99, 199)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n"
    tsv = header + f"0\tWhat colour?\tLook closely.\tred\tblue\tgreen\t\tB\tcolor\t{b64}\n" \
                   f"1\tHow many?\tnan\tone\ttwo\t\t\tA\tcount\t{b64}\n"
    (root / "mmbench_dev_en.tsv").write_text(tsv, encoding="utf-8")
    return {"mme": {"questions": root / "llava_mme.jsonl", "images": mme},
            "pope": {"questions": root / "llava_pope_test.jsonl", "images": coco, "anno": root / "pope"},
            "seed": {"questions": root / "llava-seed-bench.jsonl", "images": root, "anno": root / "SEED-Bench.json"},
            "mmbench": {"questions": root / "mmbench_dev_en.tsv"}}
