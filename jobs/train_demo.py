"""Trains the shipped demo model on the synthetic scenes: ``python -m jobs.train_demo --out DIR``."""

from __future__ import annotations

import argparse
import logging

from segcore.models.demo import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    """Parses flags, trains, saves; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m jobs.train_demo", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to save the model into (save_pretrained layout)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch threads (CPUs to use)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.batch_size <= 0 or args.threads <= 0:
        parser.error(f"Expected positive --steps, --batch-size and --threads, but got {args.steps}, "
                     f"{args.batch_size}, {args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = train(TrainConfig(args.out, args.steps, args.batch_size, args.lr, args.threads, args.seed))
    logging.info("saved the demo model to %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
