"""Stage holdout: score the trained refiner on a second synthetic scene it never saw (reports/holdout/)."""

from refiner.config import load_params
from refiner.holdout import evaluate_holdout


def main() -> None:
    metrics = evaluate_holdout(load_params(), "data/train/model.safetensors", "data/holdout", "reports/holdout")
    t, r = metrics["methods"]["teacher"], metrics["methods"]["refiner"]
    print(
        f"held-out clip: static flicker {t['flicker_std_rel']:.4f} -> {r['flicker_std_rel']:.4f}, "
        f"AbsRel {t['absrel']:.4f} -> {r['absrel']:.4f}"
    )


if __name__ == "__main__":
    main()
