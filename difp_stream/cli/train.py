"""Training: `train` (the DIFP model), `distill` (its fast model), `encoder` (the face generator's style encoder)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..difp import default_model_dir, load_model
from ..difp.attributes import ATTRIBUTES_FILE
from ..difp.config import ModelConfig
from ..difp.expression import DIRECTIONS_FILE
from ..difp.stylespace import StyleModelConfig
from ..gan.encoder import EncoderConfig
from ..runtime import select
from ..train import TrainConfig, Trainer, load_faces
from ..train.attributes import fit_attributes
from ..train.directions import fit_directions
from ..train.distill import DistillConfig, Distiller
from ..train.encoder import EncoderTrainConfig, EncoderTrainer, make_pairs
from ..train.heads import HeadTrainer
from ..train.stylespace import StyleDIFPTrainer, StyleTrainConfig, build_latents
from .common import EXIT_OK, UsageError, num


def _train_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="difp-stream train",
                                description="Train a DIFP model (VAE, U-Net stage 1, U-Net stage 2, decoder fine-tune); resumable.")
    p.add_argument("data", help="folder with manifest.tsv, the crops and dlib_descriptors.npy")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.jsonl and model/ (fp16 weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--resolution", type=int, default=64, help="crop size the model works at (default: 64)")
    p.add_argument("--split", default="train", help="manifest split to train on (default: train)")
    p.add_argument("--eval-split", default="eval", help="split for the VAE's eval PSNR (default: eval)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N crops (smoke tests)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "difp-stream"), help="where resized crops are cached")
    p.add_argument("--init", default=None, help="start from this model folder instead of random weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--from-phase", choices=["vae", "unet1", "unet2", "decoder"], default=None,
                   help="restart the run (or --init model) at this phase with fresh step counts")
    p.add_argument("--no-progress", action="store_true")
    for f in ("vae_steps", "stage1_steps", "stage2_steps", "decoder_steps", "batch_vae", "batch_unet"):
        p.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    for f in ("lr_vae", "lr_unet", "lr_decoder", "drop", "checkpoint_seconds", "encoder_anchor", "phase_minutes"):
        p.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    return p


def cmd_train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_faces(args.data, args.split, args.resolution, args.cache, args.limit)
    try:
        eval_data = load_faces(args.data, args.eval_split, args.resolution, args.cache, 256)
    except ValueError:
        eval_data = None
    tcfg = TrainConfig(**{k: getattr(args, k) for k in ("vae_steps", "stage1_steps", "stage2_steps", "decoder_steps",
                                                        "batch_vae", "batch_unet", "lr_vae", "lr_unet", "lr_decoder",
                                                        "drop", "checkpoint_seconds", "encoder_anchor",
                                                        "phase_minutes")})
    trainer = Trainer(data, args.out, ModelConfig(resolution=args.resolution), tcfg, args.device, eval_data,
                      init_model=args.init, progress=not args.no_progress, from_phase=args.from_phase)
    trainer.run()
    print(f"model written to {Path(args.out) / 'model'}")
    return EXIT_OK


def cmd_distill(argv: list[str]) -> int:
    d = DistillConfig()
    p = argparse.ArgumentParser(prog="difp-stream distill",
                                description="Distil a fast model from a trained one: a smaller U-Net that gives the "
                                            "guided eps in one call, and a small decoder for the protected faces. "
                                            "Resumable.")
    p.add_argument("data", help="folder with manifest.tsv, the crops and dlib_descriptors.npy")
    p.add_argument("--out", required=True, help="run folder: records/, distill.pt and model/ (fp16 weights)")
    p.add_argument("--teacher", default=None, help="'default' or a model folder (default: the shipped default)")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="use only the first N crops (smoke tests)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "difp-stream"), help="where resized crops are cached")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime",
                   help="runs the teacher while recording (default: onnxruntime)")
    for f in ("crops", "unet_steps", "decoder_steps", "batch"):
        p.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    for f in ("lr", "checkpoint_seconds"):
        p.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = load_model(args.teacher)
    if teacher.cfg.distilled:
        raise SystemExit("the teacher must be a full model, not a distilled one")
    data = load_faces(args.data, args.split, teacher.cfg.resolution, args.cache, args.limit)
    backend, _ = select(args.backend, teacher)
    dcfg = DistillConfig(crops=min(args.crops, len(data.images)), unet_steps=args.unet_steps,
                         decoder_steps=args.decoder_steps, batch=args.batch, lr=args.lr,
                         checkpoint_seconds=args.checkpoint_seconds)
    Distiller(teacher, data, args.out, dcfg, backend).run()
    return EXIT_OK


def cmd_encoder(argv: list[str]) -> int:
    """The style encoder of the face generator: make training pairs, train; the early-exit heads (all resumable)."""
    d = EncoderTrainConfig()
    p = argparse.ArgumentParser(prog="difp-stream encoder",
                                description="Train the encoder from face crops to the face generator's styles (W+).")
    sub = p.add_subparsers(dest="action", required=True)
    pp = sub.add_parser("pairs", help="render the generator's faces with their styles (resumes by shard)")
    pp.add_argument("out", help="folder for shard_NNNN.npz")
    pp.add_argument("--count", type=int, default=20000, help="faces (default: 20000)")
    pp.add_argument("--shard", type=int, default=250, help="faces per shard (default: 250)")
    pp.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto",
                    help="where faces are rendered (auto: OpenVINO when installed, else PyTorch)")
    tp = sub.add_parser("train", help="train the encoder on a pairs folder (resumes from OUT/checkpoint.pt)")
    tp.add_argument("pairs", help="folder of shard_NNNN.npz (more may arrive while it trains)")
    tp.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.jsonl, model/")
    tp.add_argument("--size", type=int, default=EncoderConfig.size, help="input crop size (default: 128)")
    tp.add_argument("--channels", default=",".join(map(str, EncoderConfig.channels)), help="stage widths")
    tp.add_argument("--head-channels", type=int, default=EncoderConfig.head_channels,
                    help="features squeezed to this many channels before the dense head (0: none)")
    for f in ("steps", "batch", "eval_pairs", "reload_every"):
        tp.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    for f in ("lr", "checkpoint_seconds", "jitter", "degrade"):
        tp.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(d, f), help=f"(default: {getattr(d, f)})")
    hp = sub.add_parser("heads", help="train the generator's early-exit heads (128 and 256 px; resumes)")
    hp.add_argument("out", help="run folder: checkpoint.pt, model/exit{128,256}.* (copy them into "
                                "difp_stream/weights/mobilestylegan to ship them)")
    hp.add_argument("--minutes", type=float, default=60, help="training time (default: 60)")
    hp.add_argument("--backend", choices=["auto", "torch", "openvino"], default="auto",
                    help="where the generator's features are computed (auto: OpenVINO when installed)")
    for q in (pp, tp, hp):
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        q.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.action == "heads":
        psnr = HeadTrainer(args.out, backend=args.backend).run(args.minutes)
        print(f"heads written to {Path(args.out) / 'model'}; PSNR to the full render averaged down: "
              + ", ".join(f"{s} px {v:.1f} dB" for s, v in sorted(psnr.items())))
        return EXIT_OK
    if args.action == "pairs":
        shards = make_pairs(args.out, args.count, args.shard, progress=not args.no_progress, backend=args.backend)
        print(f"{len(shards)} shards in {args.out}")
        return EXIT_OK
    cfg = EncoderTrainConfig(**{k: getattr(args, k) for k in ("steps", "batch", "eval_pairs", "reload_every", "lr",
                                                              "checkpoint_seconds", "jitter", "degrade")})
    mcfg = EncoderConfig(size=args.size, channels=tuple(int(c) for c in args.channels.split(",")),
                         head_channels=args.head_channels)
    EncoderTrainer(args.pairs, args.out, cfg, mcfg, progress=not args.no_progress).run()
    print(f"encoder written to {Path(args.out) / 'model'}")
    return EXIT_OK


def cmd_styles(argv: list[str]) -> int:
    """DIFP in the face generator's style space: encode the training crops, then train (both resumable)."""
    d, md = StyleTrainConfig(), StyleModelConfig()
    p = argparse.ArgumentParser(prog="difp-stream styles",
                                description="Train the DIFP model that works in the face generator's style space.")
    sub = p.add_subparsers(dest="action", required=True)
    lp = sub.add_parser("latents", help="encode a faces folder's crops into W+ (RUN/latents.npz; resumes)")
    lp.add_argument("faces", help="folder with manifest.tsv (with landmarks) and dlib_descriptors.npy")
    lp.add_argument("run", help="run folder")
    lp.add_argument("--split", default="train", help="manifest split (default: train)")
    lp.add_argument("--limit", type=num(int, 1), default=None, help="first N crops only")
    lp.add_argument("--labels", choices=["photo", "render"], default="render",
                    help="identity code of each latent: of its render (default; ~0.2 s a face) or of the photo")
    fp = sub.add_parser("fit", help="train on RUN/latents.npz (resumes from RUN/checkpoint.pt; writes RUN/model)")
    fp.add_argument("run", help="run folder")
    fp.add_argument("--minutes", type=num(float, 0.01), default=None, help="stop after this long (resumable)")
    for f in ("stage1_steps", "stage2_steps", "batch", "eval_every"):
        fp.add_argument("--" + f.replace("_", "-"), type=num(int, 1), default=getattr(d, f),
                        help=f"(default: {getattr(d, f)})")
    for f in ("lr", "drop_id", "drop_style"):
        fp.add_argument("--" + f.replace("_", "-"), type=num(float, 0.0), default=getattr(d, f),
                        help=f"(default: {getattr(d, f)})")
    for f in ("width", "depth", "basis_rank"):
        fp.add_argument("--" + f.replace("_", "-"), type=num(int, 1), default=getattr(md, f),
                        help=f"network (default: {getattr(md, f)})")
    dp = sub.add_parser("directions", help="fit the expression directions on the generator's own renders "
                                           "(writes MODEL/directions.npz, which the pipeline drives the fake with)")
    ap = sub.add_parser("attributes", help="fit the gender and age directions on the generator's own renders "
                                           "(writes MODEL/attributes.npz, which --attributes keep steers with)")
    for q, file, count in ((dp, "directions.npz", 1500), (ap, "attributes.npz", 600)):
        q.add_argument("model", nargs="?", default=None,
                       help=f"the model folder to write {file} into (default: the shipped model's)")
        q.add_argument("--count", type=num(int, 50), default=count, help=f"random renders measured (default: {count})")
        q.add_argument("--probe", type=num(int, 1), default=10, help="faces each layer range is tried on (default: 10)")
        q.add_argument("--seed", type=int, default=0)
    for q in (lp, fp, dp, ap):
        q.add_argument("--threads", type=num(int, 1), default=None, help="torch CPU threads")
        q.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.action in ("directions", "attributes"):
        folder = Path(args.model) if args.model else default_model_dir()
        if not folder.is_dir():
            raise UsageError(f"model folder {folder} does not exist")
        name, fit = ((DIRECTIONS_FILE, fit_directions) if args.action == "directions"
                     else (ATTRIBUTES_FILE, fit_attributes))
        d = fit(folder / name, args.count, args.probe, seed=args.seed, progress=not args.no_progress)
        print(f"{args.action} written to {folder / name}: {d.report}")
        return EXIT_OK
    if args.action == "latents":
        print(build_latents(args.faces, args.run, args.split, args.limit, progress=not args.no_progress,
                            labels=args.labels))
        return EXIT_OK
    cfg = StyleTrainConfig(**{k: getattr(args, k) for k in ("stage1_steps", "stage2_steps", "batch", "eval_every",
                                                            "lr", "drop_id", "drop_style")})
    mcfg = StyleModelConfig(width=args.width, depth=args.depth, basis_rank=args.basis_rank)
    val = StyleDIFPTrainer(args.run, cfg, mcfg, progress=not args.no_progress).fit(args.minutes)
    print(f"model written to {Path(args.run) / 'model'} (validation loss {val:.4f})")
    return EXIT_OK
