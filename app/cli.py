"""`moduletune serve | worker | run | submit | sweep | runs | show | cancel | retry | count | magnitudes`."""
from __future__ import annotations

import argparse
import json
import sys

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe one run (shared by run, submit and sweep)."""
    p.add_argument("--task", default="sst2", help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli")
    p.add_argument("--modules", default="layernorm",
                   help="module family (query key value attention_output ffn_intermediate ffn_output "
                        "layernorm bias embeddings classifier full random:<family>; aliases Q K V AO FI FO LN); "
                        "join with + to train several together")
    p.add_argument("--layers", default="all", help="all, 7, 0-3,11, first:2, last:4")
    p.add_argument("--model", default=None, help="the embedded all-MiniLM-L6-v2 (default), a Hub id or a local path")
    p.add_argument("--no-head", action="store_true", help="keep the classifier head frozen")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per module family)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None, help="train on a seeded, stratified sample of N examples")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on a seeded sample of N examples")
    p.add_argument("--eval-every", type=int, default=None, help="also evaluate every N steps")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--glue-dir", default=None, help="a local GLUE folder (default: MODULETUNE_GLUE_DIR, else the Hub)")


def config_from_args(args, **overrides):
    """A validated RunConfig from parsed flags."""
    from tuning.config import DEFAULT_MODEL, RunConfig

    return RunConfig(
        task=args.task, modules=args.modules, layers=args.layers, model=args.model or DEFAULT_MODEL,
        train_head=not args.no_head, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        max_seq_len=args.max_seq_len, warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        seed=args.seed, max_train=args.max_train, max_eval=args.max_eval, eval_every=args.eval_every,
        device=args.device, precision=args.precision, glue_dir=args.glue_dir, **overrides,
    )


def check_layers_against_model(config) -> None:
    """Refuse an out-of-range layer spec before anything heavy is loaded."""
    from tuning import modules
    from tuning.models import load_config

    modules.architecture_for(load_config(config.model).model_type)
    modules.parse_layers(config.layers, modules.num_hidden_layers(load_config(config.model)))


def cmd_run(args) -> int:
    from tqdm import tqdm

    from tuning.train import fine_tune

    config = config_from_args(args)
    check_layers_against_model(config)
    bar = tqdm(total=None, desc=f"{config.task} {'+'.join(config.modules)}@{config.layers}",
               unit="step", file=sys.stderr, dynamic_ncols=True, disable=args.quiet)

    def on_event(event):
        if event["kind"] == "step":
            bar.total = event["total_steps"]
            bar.update(event["step"] - bar.n)
            bar.set_postfix(loss=f"{event['loss']:.4f}", ex_s=f"{event['examples_per_second']:.0f}")
        elif event["kind"] == "eval":
            bar.write(f"step {event['step']}: " + ", ".join(f"{k}={v:.4f}" for k, v in event["metrics"].items()))

    result = fine_tune(config, on_event, output_dir=args.output)
    bar.close()
    out = result.to_dict()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{result.task} {'+'.join(result.modules)} layers {result.layer_spec}: "
              f"{result.primary_metric_name}={result.primary_metric:.4f}  "
              + "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
        print(f"trainable {result.trainable_params:,} of {result.total_params:,} ({result.trainable_pct:.4f}%); "
              f"module {result.module_params:,} ({result.module_pct:.4f}% of the encoder), head {result.head_params:,}")
        print(f"{result.train_seconds:.1f}s training, {result.examples_per_second:.0f} examples/s on {result.device}")
        if result.artifact_dir:
            print(f"artifact: {result.artifact_dir}")
    return 0


def cmd_count(args) -> int:
    from tuning import glue, modules
    from tuning.models import build_from_config, load_config

    config = load_config(args.model or "all-MiniLM-L6-v2")
    num_labels = glue.get_task(args.task).num_labels
    model = build_from_config(config, num_labels=num_labels, on_meta=True)
    sel = modules.select_parameters(model, args.modules, args.layers, not args.no_head, args.seed)
    out = {"model": args.model or "all-MiniLM-L6-v2", "modules": list(modules.parse_families(args.modules)),
           "layers": list(modules.parse_layers(args.layers, modules.num_hidden_layers(config))),
           "num_layers": modules.num_hidden_layers(config), **sel.counts()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"module {out['module_params']:,} ({out['module_pct']:.4f}% of {out['encoder_params']:,}), "
              f"head {out['head_params']:,}, trainable {out['trainable_params']:,} "
              f"({out['trainable_pct']:.4f}% of {out['total_params']:,})")
    return 0


def cmd_magnitudes(args) -> int:
    from tuning import magnitudes
    from tuning.models import load_classifier

    model = load_classifier(args.model or "all-MiniLM-L6-v2", 2)
    rows = magnitudes.magnitude_stats(model)
    summary = {kind: magnitudes.family_summary(rows, kind) for kind in ("weight", "bias")}
    if args.json:
        print(json.dumps({"model": args.model or "all-MiniLM-L6-v2", "hist_edges": magnitudes.HIST_EDGES.tolist(),
                          "summary": summary, "rows": rows}))
    else:
        print(f"{'family':<18}{'mean |w| (weights)':>20}{'mean |b| (biases)':>20}")
        for family, value in sorted(summary["weight"].items(), key=lambda kv: -kv[1]):
            print(f"{family:<18}{value:>20.4f}{summary['bias'].get(family, float('nan')):>20.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moduletune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="fine-tune one module selection now, in this process")
    add_run_flags(p)
    p.add_argument("--output", default=None, help="write the artifact (trained tensors + config) here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("count", help="trainable-parameter counts without training")
    p.add_argument("--task", default="sst2")
    p.add_argument("--modules", default="layernorm")
    p.add_argument("--layers", default="all")
    p.add_argument("--model", default=None)
    p.add_argument("--no-head", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("magnitudes", help="weight-magnitude statistics per module family and layer")
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_magnitudes)

    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as err:
        print(f"moduletune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moduletune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
