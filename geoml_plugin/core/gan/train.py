"""Train a GAN on raster tiles: the ``geoml:traingan`` job.

Without TARGET the model learns to generate tiles that look like INPUT
(terrain from a DEM, texture from imagery): a seamless tile generator
(``dcgan_sn`` or ``wgan_gp``, see ``trainers``). With TARGET it learns to
translate INPUT into TARGET pixel by pixel (``pix2pix``, or ``unet_l1``
without the adversary). The saved model holds only the generator, the band
statistics that bring outputs back to the raster's units (e.g. metres), the
training pixel size and CRS, and the metrics below. Nothing is written
unless training completes; Cancel stops at the next iteration.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..device import describe_device, resolve_device, seed_everything
from ..errors import InputError
from ..modelfile import ModelMetadata, new_provenance, save_model
from ..outputs import check_not_an_input, check_outputs, check_writable, sidecar_name, write_report_then_model
from ..progress import Feedback, ensure_feedback
from ..raster.georef import ground_metres_per_unit
from ..raster.io import RasterReader, band_units
from ..spec import param, validate
from ..train_state import check_folder
from . import metrics as gan_metrics
from .architectures import ARCH_LABELS
from .data import TileSampler, align_target, release
from .report import losses_path, tile_to_rgb, write_report
from .trainers import CONDITIONAL, UNCONDITIONAL, Pix2PixTrainer, TileGanTrainer

ARCHITECTURES = ("auto",) + UNCONDITIONAL + CONDITIONAL
MIN_TILE, MAX_TILE, TILE_MULTIPLE = 32, 512, 16
GENERATED_NODATA = -9999.0


@dataclass
class GanTrainConfig:
    input_path: str
    output_model: str
    target_path: Optional[str] = None  # given: conditional INPUT → TARGET translation
    # 1-based INPUT bands, or "1,2,3" (default all but alpha bands)
    bands: Optional[list] = param(None, kind="str", optional=True,
                                  label="Input bands (e.g. 1,2,3; empty = all but alpha)", help=(
        "<b>Input bands</b>: e.g. 1,2,3 (empty = all but an alpha band, which stays a nodata mask). <b>Tile "
        "size</b>: training crop in pixels: 64 (default), 128 or 256 (any multiple of 16 from 32 to 512, at most the "
        "raster size). Random crops are rotated and flipped; crops containing nodata are skipped (TARGET nodata is "
        "masked out of the loss)."))
    # 1-based TARGET bands (default all but alpha bands)
    target_bands: Optional[list] = param(None, kind="str", optional=True, advanced=True,
                                         label="Target bands (empty = all but alpha)")
    tile_size: int = param(64, label="Tile size (pixels: 64, 128, 256)", minimum=MIN_TILE, maximum=MAX_TILE,
                           help_of="bands")
    iterations: int = param(1000, label="Iterations", minimum=1, help=(
        "<b>Iterations</b> × <b>batch size</b> = tiles seen. The defaults give recognisable results in a few minutes "
        "on a CPU."))
    batch_size: int = param(16, label="Batch size", minimum=1, help_of="iterations")
    architecture: str = param("auto", choices=ARCH_LABELS, label="Architecture")
    # conditional: weight of the L1 term against the adversarial term
    l1_weight: float = param(100.0, label="L1 weight (conditional)", minimum=0.0, advanced=True)
    learning_rate: float = param(2e-4, label="Learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    device: str = "auto"
    seed: int = param(0, label="Random seed", minimum=0)
    report_path: Optional[str] = None  # PNG: samples + loss curves (and a _losses.csv beside it)
    generator_widths: Optional[list] = None  # advanced: network size (default per architecture)
    critic_widths: Optional[list] = None
    latent_channels: int = 32
    # an existing folder: a checkpoint every ``checkpoint_every`` iterations (0: every tenth of the run)
    checkpoint_dir: Optional[str] = None
    checkpoint_every: int = 0
    resume: bool = False  # continue from the checkpoint in checkpoint_dir when there is one


@dataclass
class GanTrainResult:
    model_path: str
    report_path: Optional[str]
    task: str
    architecture: str
    iterations: int
    seconds: float
    device: str
    metrics: dict = field(default_factory=dict)
    losses: dict = field(default_factory=dict)  # name → list per iteration


def report_path_for(model_path: str) -> str:
    """Where the dialog puts the PNG report of the model ``model_path``: ``x_report.png`` for ``x.safetensors``
    (its loss table, ``x_report_losses.csv``, goes beside it)."""
    return sidecar_name(model_path, "gan_report")


def output_paths(cfg: GanTrainConfig) -> list:
    """Every file a run with ``cfg`` writes, replacing any file of that name: the model, then the PNG report
    and its loss table (:func:`report.losses_path`) when ``cfg.report_path`` is set."""
    return [cfg.output_model] + ([cfg.report_path, losses_path(cfg.report_path)] if cfg.report_path else [])


def resolve_architecture(cfg: GanTrainConfig) -> str:
    arch = (cfg.architecture or "auto").strip().lower()
    if arch not in ARCHITECTURES:
        raise InputError(f"Unknown GAN architecture '{cfg.architecture}'.", f"Choose one of {', '.join(ARCHITECTURES)}.")
    if arch == "auto":
        return "pix2pix" if cfg.target_path else "dcgan_sn"
    if cfg.target_path and arch in UNCONDITIONAL:
        raise InputError(f"'{arch}' generates tiles from noise; with a TARGET raster choose pix2pix or unet_l1.")
    if not cfg.target_path and arch in CONDITIONAL:
        raise InputError(f"'{arch}' translates INPUT into TARGET: give a TARGET raster, or choose dcgan_sn/wgan_gp.")
    return arch


def _validate(cfg: GanTrainConfig) -> str:
    arch = resolve_architecture(cfg)
    t = int(cfg.tile_size)
    if t < MIN_TILE or t > MAX_TILE or t % TILE_MULTIPLE:
        raise InputError(f"Tile size {t} is not supported.",
                         f"Use a multiple of {TILE_MULTIPLE} between {MIN_TILE} and {MAX_TILE} (64, 128 or 256).")
    if cfg.iterations < 1:
        raise InputError("ITERATIONS must be at least 1.")
    if cfg.batch_size < 1:
        raise InputError("BATCH_SIZE must be at least 1.")
    validate(cfg, skip=("architecture",))  # checked above, in any letter case
    inputs = {"input raster": cfg.input_path, "target raster": cfg.target_path}
    check_outputs([cfg.output_model], inputs)
    check_folder(cfg.checkpoint_dir, cfg.resume, cfg.checkpoint_every)
    if cfg.report_path:
        check_not_an_input(cfg.report_path, inputs)
        check_not_an_input(losses_path(cfg.report_path), inputs)  # the loss table beside the report
        if os.path.splitext(cfg.report_path)[1].lower() != ".png":
            raise InputError(f"The training report is a PNG image, but '{os.path.basename(cfg.report_path)}' "
                             "is not named .png.", "Name the report .png.")
        check_writable(cfg.report_path)
    if cfg.target_path and os.path.abspath(cfg.target_path) == os.path.abspath(cfg.input_path) and \
            (cfg.target_bands or None) == (cfg.bands or None):
        raise InputError("TARGET is the same raster and bands as INPUT; there is nothing to translate.")
    return arch


_ELEVATION_HINTS = re.compile(r"(elev|height|altitude|\bdem\b|dem_|_dem|dtm|dsm|terrain|bathy)", re.IGNORECASE)


def _kind(path: str, names: list, units: str) -> str:
    """How outputs are best shown: 'rgb', 'elevation' (hillshade + terrain colours) or 'continuous'."""
    if len(names) >= 3:
        return "rgb"
    hint = " ".join(names + [os.path.basename(path)])
    if len(names) == 1 and (units in ("m", "ft", "feet", "foot") or _ELEVATION_HINTS.search(hint)):
        return "elevation"
    return "continuous"


def _target_info(path: str, names: list, units: str, mean, std, samples: np.ndarray) -> dict:
    """``ModelMetadata.target``: what the generator outputs and how to bring it back to units."""
    vals = samples * np.asarray(std)[None, :, None, None] + np.asarray(mean)[None, :, None, None]
    lo = np.percentile(vals, 2, axis=(0, 2, 3))
    hi = np.percentile(vals, 98, axis=(0, 2, 3))
    return {"name": names[0] if len(names) == 1 else "bands", "units": units, "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "bands": len(names), "band_names": names, "kind": _kind(path, names, units),
            "nodata": GENERATED_NODATA, "value_range": [[float(a), float(b)] for a, b in zip(lo, hi)]}


def _pixel_size_m(info) -> float:
    px = info.pixel_size[0]
    if not info.crs_wkt:
        return px
    x0, y0, x1, y1 = info.extent
    try:
        return px * ground_metres_per_unit(info.crs_wkt, (x0 + x1) / 2, (y0 + y1) / 2)
    except Exception:  # a CRS without a position on Earth (local engineering CRS)
        return px


def run_traingan(cfg: GanTrainConfig, feedback: Optional[Feedback] = None) -> GanTrainResult:
    """Train a tile generator or a raster→raster translator and save it (with its report).

    Under ``torchrun`` with several processes this is one data-parallel run: ``cfg.batch_size`` is the batch
    of all processes together, each process draws its share of tiles (and its own latent noise), each
    network's gradients are averaged over the processes before every update, BatchNorm statistics stay
    per process, only rank 0 writes the model and the report, and a failure on any rank stops them all
    (``distributed``)."""
    from .. import distributed

    arch = _validate(cfg)
    with distributed.session(cfg.device) as session:
        return _traingan(cfg, arch, feedback, session)


def _traingan(cfg: GanTrainConfig, arch: str, feedback: Optional[Feedback], session) -> GanTrainResult:
    fb = ensure_feedback(feedback) if session is None else session.feedback(feedback)
    t0 = time.perf_counter()
    world, rank = (session.world_size, session.rank) if session is not None else (1, 0)
    if cfg.batch_size < 2 * world:
        raise InputError(f"A batch of {cfg.batch_size} is too small for {world} processes.",
                         f"BATCH_SIZE is the batch of all processes together: use at least {2 * world}.")
    device = session.device if session is not None else resolve_device(cfg.device)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed if rank == 0 else (cfg.seed, rank))  # each process its own tiles
    fb.log(f"Device: {describe_device(device)}" + (f" × {world} processes (rank 0 shown)" if world > 1 else "")
           + f"; architecture {arch}; tile {cfg.tile_size} px")
    reader = RasterReader(cfg.input_path, cfg.bands, skip_alpha=True)
    target_src = treader = None
    try:
        in_mean, in_std, n_valid = reader.band_statistics()
        if n_valid == 0:
            raise InputError(f"The INPUT raster '{os.path.basename(cfg.input_path)}' has no valid pixels "
                             "(everything is nodata).")
        tgt_mean = tgt_std = None
        if cfg.target_path:
            target_src = align_target(reader.info, cfg.target_path)
            treader = RasterReader(target_src, cfg.target_bands, skip_alpha=True, name=cfg.target_path)
            tgt_mean, tgt_std, t_valid = treader.band_statistics()
            if t_valid == 0:
                raise InputError("The TARGET raster has no valid pixels where it overlaps INPUT.")
        for r in (reader, treader):
            if r is not None and r.alpha_note():
                fb.log(r.alpha_note())
        fb.progress(0.01, "finding training tiles")
        sampler = TileSampler(reader, cfg.tile_size, treader, in_mean, in_std, tgt_mean, tgt_std)
        if sampler.valid_positions() >= 0:
            fb.log(f"{sampler.valid_positions()} tile positions without nodata")
        trainer = _make_trainer(cfg, arch, len(reader.bands), len(treader.bands) if treader else 0, device)
        batch = cfg.batch_size
        if session is not None:
            _distribute(trainer, session, cfg.seed)
            batch = session.share(cfg.batch_size)[1]
        eval_batch = sampler.sample(32 if treader else 64, np.random.default_rng(cfg.seed + 1))
        metrics = {}
        if treader is not None:
            metrics["l1_untrained"] = trainer.evaluate(eval_batch, trainer.g)
        ck = _GanCheckpoints(cfg, arch, session) if cfg.checkpoint_dir else None
        losses = _train_loop(cfg, trainer, sampler, rng, fb.sub(0.02, 0.95), batch, session, ck)
        fb.progress(0.96, "evaluating")
        samples, rows, titles = _evaluate(cfg, trainer, sampler, eval_batch, metrics, reader, tgt_std)
        meta = _metadata(cfg, arch, trainer, reader, treader, in_mean, in_std, tgt_mean, tgt_std, eval_batch, samples,
                     metrics)
        if world > 1:
            meta.provenance["processes"] = world
        fb.progress(0.99, "saving")  # the last point where a cancel stops the job: after it, the outputs are written
        # report first, model last; if either fails, the report and loss table are as before this run
        if session is None or session.is_main:  # only rank 0 writes; the others wait until it has (or failed)
            write_report_then_model(output_paths(cfg)[1:], _report_writer(cfg, arch, rows, titles, losses),
                                    lambda: save_model(cfg.output_model, trainer.ema, meta))
        if session is not None:
            session.barrier("traingan/saved")
    finally:
        reader.close()
        if treader is not None:
            treader.close()
        release(target_src)
    secs = time.perf_counter() - t0
    fb.log(f"Saved {cfg.output_model} after {cfg.iterations} iterations in {secs:.0f} s; "
           + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return GanTrainResult(os.path.abspath(cfg.output_model), os.path.abspath(cfg.report_path) if cfg.report_path else None,
                          meta.task, arch, cfg.iterations, secs, str(device), metrics, losses)


def _report_writer(cfg, arch, rows, titles, losses):
    """The step that writes the PNG report and its loss table (None when no report was asked for)."""
    if not cfg.report_path:
        return None
    title = f"GeoML {arch}: {os.path.basename(cfg.input_path)}" + (
        f" → {os.path.basename(cfg.target_path)}" if cfg.target_path else "") + f", {cfg.iterations} it."
    return lambda: write_report(cfg.report_path, rows, titles, losses, title)


def _make_trainer(cfg, arch, in_bands, out_bands, device):
    critic = tuple(cfg.critic_widths or (32, 64, 128))
    if arch in UNCONDITIONAL:
        gen = {"nz": int(cfg.latent_channels)}
        if cfg.generator_widths:
            gen["widths"] = tuple(int(w) for w in cfg.generator_widths)
        return TileGanTrainer(in_bands, cfg.tile_size, arch, device, gen, critic, cfg.learning_rate)
    gen = {"widths": tuple(int(w) for w in cfg.generator_widths)} if cfg.generator_widths else {}
    return Pix2PixTrainer(in_bands, out_bands, device, gen, adversarial=(arch == "pix2pix"),
                          l1_weight=cfg.l1_weight, critic_widths=critic, lr=cfg.learning_rate)


def _distribute(trainer, session, seed: int) -> None:
    """Make ``trainer`` one process of a data-parallel run: every network starts from rank 0's weights (and
    the running average from them), its gradients are averaged over the processes before each update
    (equal shares of the batch are assumed: ``session.share`` gives them within one tile), and each process
    draws its own latent noise and crop offsets."""
    import torch

    nets = [trainer.g] + ([trainer.d] if getattr(trainer, "d", None) is not None else [])
    for net in nets:
        session.broadcast_parameters(net)
    trainer.ema.load_state_dict(trainer.g.state_dict())
    trainer.sync = lambda params: session.average_gradients(params, 1.0 / session.world_size)
    torch.manual_seed(seed + 7919 * session.rank)


class _GanCheckpoints:
    """GAN training checkpoints (``core/train_state.py``): both networks, the running average, both Adam
    states, the losses so far and the random states (the tile sampler's, every process's torch generator for
    the latent noise) — so a resumed run draws the same tiles and noise and ends with the generator of an
    uninterrupted run. Rank 0 writes; every rank reads."""

    def __init__(self, cfg: GanTrainConfig, arch: str, session):
        self.cfg, self.session = cfg, session
        self.fp = {"kind": "traingan", "input": os.path.abspath(cfg.input_path),
                   "target": os.path.abspath(cfg.target_path) if cfg.target_path else None, "architecture": arch,
                   "tile_size": cfg.tile_size, "iterations": cfg.iterations, "batch_size": cfg.batch_size,
                   "seed": cfg.seed, "bands": cfg.bands, "target_bands": cfg.target_bands,
                   "generator_widths": cfg.generator_widths, "critic_widths": cfg.critic_widths,
                   "latent_channels": cfg.latent_channels,
                   "world_size": session.world_size if session is not None else 1}

    def _parts(self, trainer) -> list:
        parts = [("g", trainer.g, trainer.opt_g), ("ema", trainer.ema, None)]
        if getattr(trainer, "d", None) is not None:
            parts.append(("d", trainer.d, trainer.opt_d))
        return parts

    def save(self, trainer, rng, it: int, losses: dict) -> None:
        import torch

        from .. import train_state as ts

        mine = ts.b64(torch.get_rng_state())
        states = [mine] if self.session is None else self.session.exchange(f"traingan/checkpoint/{it}", mine)
        if self.session is not None and not self.session.is_main:
            return
        tensors, groups = {}, {}
        for name, net, opt in self._parts(trainer):
            tensors.update(ts.module_tensors(name, net))
            if opt is not None:
                t, groups[name] = ts.optimizer_tensors(f"opt_{name}", opt)
                tensors.update(t)
        for r, st in enumerate(states):
            tensors[f"rng.torch.{r}"] = ts.unb64(st)
        state = {"iteration": it, "fingerprint": self.fp, "param_groups": groups, "ema_steps": trainer.steps,
                 "losses": losses, "rng": rng.bit_generator.state}
        ts.write(self.cfg.checkpoint_dir, f"iteration-{it:07d}", tensors, state)

    def restore(self, trainer, rng):
        """(iterations done, losses so far) with the trainer's and ``rng``'s states restored, or None."""
        import torch

        from .. import train_state as ts

        found = ts.read(self.cfg.checkpoint_dir, self.fp)
        if found is None:
            return None
        state, tensors = found
        for name, net, opt in self._parts(trainer):
            ts.load_module(name, net, tensors)
            if opt is not None:
                ts.load_optimizer(f"opt_{name}", opt, tensors, state["param_groups"][name], trainer.device)
        trainer.steps = int(state["ema_steps"])
        rank = self.session.rank if self.session is not None else 0
        torch.set_rng_state(tensors[f"rng.torch.{rank}"])
        rng.bit_generator.state = state["rng"]
        return int(state["iteration"]), {k: list(v) for k, v in state["losses"].items()}


def _train_loop(cfg, trainer, sampler, rng, fb, batch: int, session=None, ck=None) -> dict:
    """Train; returns each loss per iteration (under torchrun: averaged over the processes when logged).
    ``ck`` (a :class:`_GanCheckpoints`): resume from its checkpoint when asked, and write one every
    ``checkpoint_every`` iterations (default: every tenth of the run, when the losses are logged)."""
    losses: dict = {}
    n_batches = getattr(trainer, "n_critic", 1)
    every = max(1, cfg.iterations // 10)
    done = 0
    if ck is not None and cfg.resume:
        restored = ck.restore(trainer, rng)
        if restored is not None:
            done, losses = restored
            fb.log(f"Resumed from the checkpoint after iteration {done} in {cfg.checkpoint_dir}.")
    ck_every = cfg.checkpoint_every or every
    t_start = time.perf_counter()
    for it in range(done + 1, cfg.iterations + 1):
        batches = [sampler.sample(batch, rng) for _ in range(n_batches)]
        for k, v in trainer.step(batches).items():
            losses.setdefault(k, []).append(v)
        fb.progress(it / cfg.iterations, f"iteration {it}/{cfg.iterations}")
        if it % every == 0 or it == cfg.iterations:
            if session is not None:  # the table and report show every process's losses, averaged
                keys = sorted(losses)
                summed = session.all_reduce_sum([x for k in keys for x in losses[k][-every:]])
                n = len(losses[keys[0]][-every:])
                for i, k in enumerate(keys):
                    losses[k][-n:] = [float(v) / session.world_size for v in summed[i * n:(i + 1) * n]]
            rate = (it - done) / max(time.perf_counter() - t_start, 1e-9)
            recent = ", ".join(f"{k} {np.mean(v[-every:]):.3f}" for k, v in losses.items())
            fb.log(f"iteration {it}/{cfg.iterations} ({rate:.1f} it/s): {recent}")
        if ck is not None and (it % ck_every == 0 or it == cfg.iterations):
            ck.save(trainer, rng, it, losses)
    return losses


def _evaluate(cfg, trainer, sampler, eval_batch, metrics, reader, tgt_std):
    """Fill ``metrics``; return generated samples and the report's image rows."""
    if isinstance(trainer, Pix2PixTrainer):
        metrics["l1_final"] = trainer.evaluate(eval_batch)
        metrics["mae_units"] = metrics["l1_final"] * float(np.mean(tgt_std))
        pred = trainer.predict(eval_batch.x)
        n = min(6, len(pred))
        rows = [[tile_to_rgb(a) for a in eval_batch.x[:n]]]
        lo = np.percentile(eval_batch.y[:n], 2, axis=(0, 2, 3))
        hi = np.percentile(eval_batch.y[:n], 98, axis=(0, 2, 3))
        rows += [[tile_to_rgb(a, lo, hi) for a in eval_batch.y[:n]], [tile_to_rgb(a, lo, hi) for a in pred[:n]]]
        return pred, rows, ["input", "target", "prediction"]
    trainer.recalibrate()
    fake = np.concatenate([trainer.samples(16) for _ in range(4)])
    real2 = sampler.sample(len(eval_batch.x), np.random.default_rng(cfg.seed + 2)).x
    real = eval_batch.x
    metrics["value_w1"] = gan_metrics.wasserstein_1d(fake, real)
    metrics["value_w1_real_vs_real"] = gan_metrics.wasserstein_1d(real2, real)
    metrics["gradient_w1"] = gan_metrics.wasserstein_1d(gan_metrics.gradient_magnitude(fake),
                                                        gan_metrics.gradient_magnitude(real))
    metrics["gradient_w1_real_vs_real"] = gan_metrics.wasserstein_1d(gan_metrics.gradient_magnitude(real2),
                                                                     gan_metrics.gradient_magnitude(real))
    lo = np.percentile(real, 2, axis=(0, 2, 3))
    hi = np.percentile(real, 98, axis=(0, 2, 3))
    rows = [[tile_to_rgb(a, lo, hi) for a in real[i : i + 8]] for i in (0, 8)]
    rows += [[tile_to_rgb(a, lo, hi) for a in fake[i : i + 8]] for i in (0, 8)]
    return fake, rows, ["training tiles (2 rows)", "generated (2 rows)"]


def _metadata(cfg, arch, trainer, reader, treader, in_mean, in_std, tgt_mean, tgt_std, eval_batch, samples, metrics):
    info = reader.info
    in_names, in_units = band_units(cfg.input_path, reader.bands)
    common = dict(pixel_size=list(info.pixel_size), crs_wkt=info.crs_wkt, patch_size=int(cfg.tile_size),
                  metrics={k: round(float(v), 6) for k, v in metrics.items()})
    prov = dict(method=arch, source=os.path.abspath(cfg.input_path), iterations=cfg.iterations,
                batch_size=cfg.batch_size, seed=cfg.seed, learning_rate=cfg.learning_rate)
    extra = {"pixel_size_m": _pixel_size_m(info), "gan_loss": arch}
    if treader is None:
        g = trainer.g
        target = _target_info(cfg.input_path, in_names, in_units, in_mean, in_std, eval_batch.x)
        target["source_bands"] = list(reader.bands)
        extra.update(stride=g.stride, margin_px=g.margin_px())
        return ModelMetadata(architecture="tile_generator", task="generation", output="image", in_bands=0,
                         arch_args={"out_bands": g.out_bands, "nz": g.nz, "widths": list(g.widths)},
                         target=target, provenance=new_provenance(**prov), extra=extra, **common)
    t_names, t_units = band_units(cfg.target_path, treader.bands)
    target = _target_info(cfg.target_path, t_names, t_units, tgt_mean, tgt_std, eval_batch.y)
    target["source_bands"] = list(treader.bands)
    prov["target"] = os.path.abspath(cfg.target_path)
    g = trainer.g
    extra.update(multiple=g.multiple, l1_weight=cfg.l1_weight)
    widths = [m.body[0].out_channels for m in g.down]
    return ModelMetadata(architecture="unet_translator", task="translation", output="dense", in_bands=len(reader.bands),
                     arch_args={"in_bands": len(reader.bands), "out_bands": len(treader.bands), "widths": widths},
                     band_indices=list(reader.bands), band_names=in_names, norm_mean=[float(v) for v in in_mean],
                     norm_std=[float(v) for v in in_std], target=target, provenance=new_provenance(**prov),
                     extra=extra, **common)
