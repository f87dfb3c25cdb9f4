"""docs/results/inject_once_recipes.json: which training recipe lets the inject-once control learn.

Reads the metrics.json of `loopjax train --arch huginn-inject-once` runs (300 steps, warm-up 30, seed 0, the
rest TrainConfig's defaults) made with these recipes:

    loopjax train --arch huginn-inject-once --steps 300 --warmup 30 --lambda1-every 100 --seed 0 --out R1
    ... the same + --adapter-init identity --out R2;  + --loops 3 --backprop-depth 9 --out R3
    (the fourth: the injection ablation's inject-once/seed_0, the same + --loops 3 --backprop-depth 9
    --adapter-init identity, --lambda1-every 50)
    python docs/scripts/inject_once_recipes.py R1 R2 R3 runs/ablation/inject-once/seed_0

and writes, per run, its recipe (loops, backprop_depth, adapter_init), the final held-out loss, the unigram
baseline and the final λ1 (mean ± s.e. over the 20 prompts)."""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "inject_once_recipes.json"


def run_entry(run_dir: Path) -> dict:
    recipe = json.loads((run_dir / "train_recipe.json").read_text())
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    return {"run": run_dir.name, "arch": recipe["arch"], "steps": recipe["steps"],
            "loops_mean": recipe["loops"] if recipe["loops"] is not None else 8,
            "loops_cap": int(recipe["max_loops_factor"] * (recipe["loops"] or 8)),
            "backprop_depth": recipe["backprop_depth"], "adapter_init": recipe.get("adapter_init", "reference"),
            "heldout_loss": summary["final_heldout_loss"], "unigram_baseline": summary["unigram_baseline"],
            "learned": summary["final_heldout_loss"] < summary["unigram_baseline"],
            "lambda1": summary["final_lambda1"], "lambda1_sem": summary["final_lambda1_sem"]}


def main(argv) -> int:
    runs = [run_entry(Path(a)) for a in argv]
    OUT.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    for r in runs:
        print(f"{r['run']}: loops {r['loops_mean']} (cap {r['loops_cap']}), backprop {r['backprop_depth']}, "
              f"{r['adapter_init']} init: held-out {r['heldout_loss']:.3f} (unigram {r['unigram_baseline']:.3f}), "
              f"λ1 {r['lambda1']:+.3f} ± {r['lambda1_sem']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
