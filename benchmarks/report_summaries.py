"""Write a radiology-style summarization file (findings -> impression) of any size, in the
schema of s2l_pipeline_tests/fixtures/radiology_sample.jsonl, so a study can be tried on a
summarization task offline (no dataset hub here).

The impression follows from the findings by a fixed rule (normal findings are summarized as
no acute process; each abnormal one is named), so a model can learn it and ROUGE-L can show it.

    .venv/bin/python benchmarks/report_summaries.py --rows 1500 --out /tmp/reports.jsonl
"""

from __future__ import annotations

import argparse
import json
import random

NORMAL = {
    "heart": "Heart size is normal.",
    "lungs": "The lungs are clear.",
    "pleura": "No pleural effusion or pneumothorax.",
    "bones": "No acute osseous abnormality.",
    "mediastinum": "The mediastinal contours are unremarkable.",
}
ABNORMAL = {
    "heart": [("Moderate cardiomegaly.", "Cardiomegaly"), ("Mild cardiomegaly.", "Cardiomegaly")],
    "lungs": [
        (
            "There is a new right lower lobe opacity.",
            "right lower lobe opacity, concerning for pneumonia",
        ),
        ("Patchy left basilar opacity.", "left basilar opacity, atelectasis or pneumonia"),
        ("Mild pulmonary vascular congestion.", "mild pulmonary vascular congestion"),
    ],
    "pleura": [
        ("Small bilateral pleural effusions.", "small bilateral pleural effusions"),
        ("Small right apical pneumothorax.", "small right apical pneumothorax"),
    ],
    "bones": [("Acute fracture of the left seventh rib.", "acute left seventh rib fracture")],
    "mediastinum": [("Widened mediastinum.", "widened mediastinum, correlate with CT")],
}


def record(rng: random.Random, i: int) -> dict:
    findings, named = [], []
    for organ in NORMAL:
        if rng.random() < 0.25:
            text, summary = rng.choice(ABNORMAL[organ])
            findings.append(text)
            named.append(summary)
        else:
            findings.append(NORMAL[organ])
    rng.shuffle(findings)
    if not named:
        impression = "No acute cardiopulmonary process."
    else:
        impression = "; ".join(named).capitalize() + "."
    return {"report_id": f"r{i:06d}", "findings": " ".join(findings), "impression": impression}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for i in range(args.rows):
            f.write(json.dumps(record(rng, i)) + "\n")
    print(json.dumps({"out": args.out, "rows": args.rows}))


if __name__ == "__main__":
    main()
