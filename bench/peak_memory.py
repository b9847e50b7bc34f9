"""Peak resident memory of each inference path next to its peer's, at the same batch size.

    python bench/peak_memory.py --checkpoint runs/sentiment-zh/checkpoint --dataset sentiment-zh \\
        [--also runs/sentiment-zh-int8 ...]

Every side runs in a fresh Python process (so one side's allocations never count for another):
import, load the model, classify the dataset's test split in batches of --batch-size in dataset
order, report ``ru_maxrss``. The sides: Hugging Face ``BertForSequenceClassification`` with the
checkpoint's weights, llmos on the checkpoint, and llmos on each --also checkpoint (quantized,
pruned or distilled copies). Reported: peak RSS after loading and at the end, in MiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(int(sys.argv[4]))
from llmos.data.batching import pad_batch
from llmos.data.readers import read_classification
from llmos.inference.classify import encode_texts
from llmos.inference.load import load_pipeline
from llmos.data.datasets import dataset_files
side, path, dataset, _, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
pipe = load_pipeline(path)
model = pipe.model
if side == "hf":
    from transformers import BertForSequenceClassification
    from llmos.checkpoint.hf import bert_to_hf, hf_bert_config
    cfg = hf_bert_config(pipe.config)
    cfg.num_labels = len(pipe.spec.labels)
    model = BertForSequenceClassification(cfg).eval()
    model.load_state_dict(bert_to_hf(pipe.model.state_dict()))
    del pipe.model
loaded = rss()
rows = read_classification(dataset_files(dataset)["test"]).rows
max_length = pipe.checkpoint.max_length
ids, types, _ = encode_texts(pipe.tokenizer, [r.text for r in rows], None, max_length)
with torch.inference_mode():
    for s in range(0, len(ids), batch):
        b = pad_batch(ids[s:s + batch], types[s:s + batch], pipe._ids["pad"] or 0)
        mask = b["attention_mask"]
        mask = torch.ones_like(b["input_ids"]) if mask is None else mask
        model(b["input_ids"], b["token_type_ids"], mask)
print(json.dumps({"loaded": loaded, "peak": rss()}))
"""


def measure(side: str, path: str, dataset: str, threads: int, batch: int) -> dict[str, float]:
    args = [sys.executable, "-c", CHILD, side, path, dataset, str(threads), str(batch)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--also", nargs="*", default=[], metavar="DIR")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sides = [("hf", args.checkpoint), ("llmos", args.checkpoint)]
    sides += [("llmos", d) for d in args.also]
    print(f"{args.dataset} test split, batch {args.batch_size}, dataset order, one process each")
    print(f"{'side':<8} {'checkpoint':<44} {'after load MiB':>15} {'peak MiB':>9}")
    for side, path in sides:
        r = measure(side, path, args.dataset, args.threads, args.batch_size)
        print(f"{side:<8} {path:<44} {r['loaded']:>15,.0f} {r['peak']:>9,.0f}")


if __name__ == "__main__":
    main()
