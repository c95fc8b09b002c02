"""How often the reference's last-token rule reads the wrong position, measured on real texts.

openai/weak-to-strong finds each example's last token as `(input_ids != 0).sum(-1) - 1`: it pads
with id 0 and counts the non-zero ids. But id 0 is a real GPT-2 token ("!"), so every "!" token in
a text moves the position read one step earlier than the text's last token (into the text, or onto
another token). w2s-scale reads the last position of the attention mask instead. This script
counts, with the real GPT-2 tokenizer, the texts where the two rules differ.

    python benchmarks/last_token_rule.py                       # the offline text sets
    python benchmarks/last_token_rule.py --dataset sciq --path /data/sciq   # hub-schema local files
"""
from __future__ import annotations

import argparse

OFFLINE = ["movie_snippets", "tweet_snippets", "amazon_snippets", "nyt_snippets"]


def texts_of(dataset: str, path: str | None, n: int) -> list[str]:
    from w2s_scale.config import DataConfig
    from w2s_scale.data.splits import make_splits

    # as many documents as the set has (make_splits caps and says so), all three splits
    cfg = DataConfig(dataset=dataset, path=path, n_train=n, n_test=max(2, n // 4), max_length=10**6)
    splits = make_splits(cfg, seed=0)
    return [ex.text for part in (splits.a, splits.b, splits.test) for ex in part]


def measure(texts: list[str], tokenizer) -> dict:
    zeros = [sum(1 for t in tokenizer(text)["input_ids"] if t == 0) for text in texts]
    affected = [z for z in zeros if z]
    return {"texts": len(texts), "with_id0": len(affected),
            "ending_in_id0": sum(tokenizer(t)["input_ids"][-1:] == [0] for t in texts),
            "mean_shift": sum(affected) / len(affected) if affected else 0.0}


def main() -> None:
    from transformers import AutoTokenizer

    from w2s_scale.assets import gpt2_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="registry name (repeatable)")
    parser.add_argument("--path", help="local files for a hub dataset")
    parser.add_argument("--n", type=int, default=100000, help="at most this many training documents")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer())
    assert tokenizer.convert_ids_to_tokens(0) == "!", "id 0 should be GPT-2's '!'"
    print(f"{'dataset':<16} {'texts':>7} {'with id 0':>16} {'ending in id 0':>16} {'mean shift':>10}")
    for dataset in args.dataset or OFFLINE:
        m = measure(texts_of(dataset, args.path, args.n), tokenizer)
        print(f"{dataset:<16} {m['texts']:>7} {m['with_id0']:>7} ({100 * m['with_id0'] / m['texts']:4.1f}%) "
              f"{m['ending_in_id0']:>7} ({100 * m['ending_in_id0'] / m['texts']:4.1f}%) "
              f"{m['mean_shift']:>10.2f}")


if __name__ == "__main__":
    main()
