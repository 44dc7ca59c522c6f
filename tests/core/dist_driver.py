"""A worker for the distributed tests, started by ``python -m torch.distributed.run``.

``dist_driver.py SPEC.json``: SPEC lists ``jobs`` (each ``{"job": "predict" | "predict_many" | "finetune" |
"metatrain" | "traingan", "config": {…}}``, run in order), the folder for each rank's ``result-<rank>.json``
(per job what it returned or the error it raised, which files this rank saved through
``save_model``/``write_report``, and a digest of the network it trained for metatrain/traingan) and optionally
``fail_rank`` / ``fail_after``: that rank raises a plain RuntimeError part way through (a crash); with
``fail_first_attempt_only`` not when torchrun has restarted the workers (``--max-restarts``);
``fail_in_step`` (fine-tuning): the crash comes in that training step, counted over the epochs;
``sleep_per_tile`` slows prediction down (seconds per tile written).
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _inject_failure(spec: dict, rank: int) -> None:
    if spec.get("fail_rank") != rank:
        return
    if spec.get("fail_first_attempt_only") and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    after = int(spec.get("fail_after", 1))
    calls = {"n": 0}
    if spec["job"] == "predict":
        from geoml_plugin.core import predict

        write = predict._write

        def failing_write(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise RuntimeError("injected crash while writing a tile")
            return write(*args, **kwargs)

        predict._write = failing_write
    elif spec["job"] in ("metatrain", "traingan"):  # a crash after ``after`` training iterations
        from geoml_plugin.core.fewshot import metatrain
        from geoml_plugin.core.gan import trainers

        owner, name = (metatrain._Learner, "step") if spec["job"] == "metatrain" else (trainers._EmaMixin,
                                                                                        "_update_ema")
        original = getattr(owner, name)

        def failing_step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise RuntimeError("injected crash in a training iteration")
            return original(self, *args, **kwargs)

        setattr(owner, name, failing_step)
    elif spec.get("fail_in_step"):  # fine-tuning: a crash in that training step (counted over the epochs)
        from geoml_plugin.core.finetune import trainer

        loss = trainer.Trainer.loss

        def failing_loss(self, *args, **kwargs):
            if self.model.training:
                calls["n"] += 1
                if calls["n"] == spec["fail_in_step"]:
                    raise RuntimeError("injected crash in a training step")
            return loss(self, *args, **kwargs)

        trainer.Trainer.loss = failing_loss
    else:
        from geoml_plugin.core.finetune import trainer

        epoch = trainer.Trainer._epoch

        def failing_epoch(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise RuntimeError("injected crash in an epoch")
            return epoch(self, *args, **kwargs)

        trainer.Trainer._epoch = failing_epoch


def _slow_down(spec: dict) -> None:
    """``sleep_per_tile``: a long job, so that a test can interrupt it part way."""
    if not spec.get("sleep_per_tile"):
        return
    import time

    from geoml_plugin.core import predict

    write = predict._write

    def slow_write(*args, **kwargs):
        time.sleep(spec["sleep_per_tile"])
        return write(*args, **kwargs)

    predict._write = slow_write


def _record_saves(saved: list) -> None:
    """Note every model file and report this rank writes (only rank 0 should)."""
    from geoml_plugin.core import modelfile
    from geoml_plugin.core.finetune import report

    save_model, write_report = modelfile.save_model, report.write_report

    def recording_save(path, *args, **kwargs):
        saved.append(str(path))
        return save_model(path, *args, **kwargs)

    def recording_report(path, *args, **kwargs):
        saved.append(str(path))
        return write_report(path, *args, **kwargs)

    modelfile.save_model, report.write_report = recording_save, recording_report


def _digest(module) -> str:
    """A digest of a network's parameters, to compare the processes' copies."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _record_trained(digests: list) -> None:
    """Note a digest of the trained network on every rank (meta-training: before the class prototypes;
    GAN training: the generator before its evaluation)."""
    from geoml_plugin.core.fewshot import metatrain
    from geoml_plugin.core.gan import train

    protos, evaluate = metatrain.set_class_prototypes, train._evaluate

    def recording_protos(model, *args, **kwargs):
        digests.append(_digest(model))
        return protos(model, *args, **kwargs)

    def recording_evaluate(cfg, trainer, *args, **kwargs):
        digests.append(_digest(trainer.g))
        return evaluate(cfg, trainer, *args, **kwargs)

    metatrain.set_class_prototypes, train._evaluate = recording_protos, recording_evaluate


def _record_resumes(resumed: list) -> None:
    """Note where a fine-tuning run resumed from its checkpoint: [epochs done, steps into the next]."""
    from geoml_plugin.core.finetune import checkpoint

    restore = checkpoint.Checkpoints.restore

    def recording_restore(self, *args, **kwargs):
        got = restore(self, *args, **kwargs)
        if got is not None:
            resumed.append([got[0], got[2]["step"] if got[2] else 0])
        return got

    checkpoint.Checkpoints.restore = recording_restore


def _run(job: dict) -> dict:
    if job["job"] == "metatrain":
        from geoml_plugin.core.fewshot.metatrain import MetaTrainConfig, run_metatrain

        res = run_metatrain(MetaTrainConfig(**job["config"]))
        return dict(val_accuracy=res.val_accuracy, best_iteration=res.best_iteration, history=res.history)
    if job["job"] == "traingan":
        from geoml_plugin.core.gan.train import GanTrainConfig, run_traingan

        res = run_traingan(GanTrainConfig(**job["config"]))
        return dict(metrics=res.metrics, losses={k: list(v) for k, v in res.losses.items()})
    if job["job"] == "predict":
        from geoml_plugin.core.predict import PredictConfig, run_predict

        res = run_predict(PredictConfig(**job["config"]))
        return dict(valid_pixels=res.valid_pixels, tiles=res.tiles, class_counts=res.class_counts,
                    value_range=list(res.value_range), output_path=res.output_path, model_pixels=res.model_pixels,
                    confidence_path=res.confidence_path)
    if job["job"] == "predict_many":
        from geoml_plugin.core.predict import PredictConfig
        from geoml_plugin.core.predict_many import run_predict_many

        res = run_predict_many(PredictConfig(**job["config"]), job["inputs"], job["output_folder"],
                               job.get("confidence", False))
        return dict(outputs=[r.output_path for r in res])
    from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune

    res = run_finetune(FinetuneConfig(**job["config"]))
    return dict(metrics={k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))},
                history=res.history, n_train=res.n_train, batch_size=res.batch_size,
                learning_rate=res.learning_rate, samples_per_second=res.samples_per_second)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    rank = int(os.environ.get("RANK", 0))
    saved: list = []
    digests: list = []
    _record_saves(saved)
    _record_trained(digests)
    resumed: list = []
    _record_resumes(resumed)
    _slow_down(spec)
    out = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", 1)), "jobs": [], "saved": saved, "digests": digests, "resumed": resumed,
           "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))}
    code = 0
    for job in spec["jobs"]:
        _inject_failure(dict(spec, job=job["job"]), rank)
        try:
            out["jobs"].append(_run(job))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["jobs"].append(dict(error=str(exc), error_type=type(exc).__name__))
            code = 1
            break
    with open(os.path.join(spec["results"], f"result-{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
