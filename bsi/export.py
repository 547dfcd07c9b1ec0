"""``python -m bsi.export RUN [--out DIR] [--weights ema|raw] [--push ORG/NAME]``: weights you can share.

``RUN`` is a run directory (the weights its training tested) or a checkpoint file (e.g.
``RUN/checkpoints/best.pt``, the weights of the best validation bpd).  ``DIR`` (default ``RUN/export``)
receives

- ``model.safetensors``: the network's weights (EMA by default), nothing pickled;
- ``proposal.safetensors``: the learned importance proposal's state (only when it has one);
- ``config.json``: what rebuilds the model without the run's config files: ``model`` (the backbone's
  settings), ``process`` (the complete process record, :func:`bsi.engine.presets.resolve_settings`),
  ``data`` (``shape`` ``[C, H, W]``, ``bins``, ``name``), ``bsi_version``, ``step``, ``weights``, and
  the weights file's sha256 under ``files`` (a reader refuses a config paired with other weights).

Every file is written atomically, ``config.json`` last.  ``bsi.load(DIR)`` loads it back; so does
``bsi.load("ORG/NAME")`` after ``--push ORG/NAME``, which uploads the folder to the Hugging Face Hub
with ``huggingface_hub.upload_folder`` (log in first: ``huggingface-cli login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from .atomic import atomic_file, file_digest, write_json
from .checkpoint import CheckpointError, checkpoint_dir
from .pretrained import CONFIG, PROPOSAL, WEIGHTS, Pretrained, from_checkpoint


def default_out(run: str | Path) -> Path:
    """``RUN/export`` for a run directory or for a checkpoint file inside ``RUN/checkpoints/``."""
    run = Path(run)
    if run.is_dir():
        return checkpoint_dir(run).parent / "export"
    return (run.parent.parent if run.parent.name == "checkpoints" else run.parent) / "export"


def _tensors(state: dict) -> dict:
    # safetensors refuses tensors that share memory (tied weights) or are views; each gets its own copy.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def write_export(model: Pretrained, out: str | Path) -> Path:
    """Write ``model`` (from :func:`bsi.pretrained.from_checkpoint`) into the folder ``out``; returns it."""
    out = Path(out)
    with atomic_file(out / WEIGHTS) as tmp:
        save_file(_tensors(model.backbone.state_dict()), str(tmp), metadata={"format": "pt"})
    proposal = model.process.proposal.state_dict()
    if proposal:
        with atomic_file(out / PROPOSAL) as tmp:
            save_file(_tensors(proposal), str(tmp))
    else:
        (out / PROPOSAL).unlink(missing_ok=True)  # left by an earlier export of another run
    config = {k: v for k, v in model.config.items() if k != "checkpoint"}
    write_json(out / CONFIG, {**config, "files": {WEIGHTS: file_digest(out / WEIGHTS)}})
    return out


def export(run: str | Path, out: str | Path | None = None, weights: str = "ema") -> Path:
    """Export the checkpoint ``run`` names (see the module docstring); returns the folder."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be ema or raw, got {weights!r}")
    return write_export(from_checkpoint(run, ema=weights == "ema"), out or default_out(run))


def push(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload an export ``folder`` to the Hub repository ``repo`` (created if needed); returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo, private=private, exist_ok=True)
    info = upload_folder(repo_id=repo, folder_path=str(folder), commit_message="bsi export",
                         allow_patterns=[WEIGHTS, PROPOSAL, CONFIG])
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsi.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (the weights its training tested) or a checkpoint file")
    parser.add_argument("--out", help="the export folder (default RUN/export)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA (default) or raw training weights")
    parser.add_argument("--push", metavar="ORG/NAME", help="also upload the folder to this Hugging Face Hub repository")
    parser.add_argument("--private", action="store_true", help="with --push: create the repository private")
    args = parser.parse_args(argv)
    try:
        folder = export(args.run, args.out, args.weights)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} weights to {folder} (load with bsi.load({str(folder)!r}))")
    if args.push:
        try:
            url = push(folder, args.push, args.private)
        except Exception as err:  # network, authentication and permission errors all end the same way
            print(f"error: uploading {folder} to {args.push} failed ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:200]}); log in with huggingface-cli login or set HF_TOKEN",
                  file=sys.stderr)
            return 2
        print(f"pushed to https://huggingface.co/{args.push} ({url}); load with bsi.load({args.push!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
