"""A worker for the distributed tests, started by ``python -m torch.distributed.run``.

``dist_driver.py SPEC.json``: SPEC names the job (``predict`` or ``finetune``), its config fields, the
folder for each rank's ``result-<rank>.json`` (what the job returned, or the error it raised) and optionally
``fail_rank`` / ``fail_after``: that rank raises a plain RuntimeError part way through (a crash).
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _inject_failure(spec: dict, rank: int) -> None:
    if spec.get("fail_rank") != rank:
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
    else:
        from geoml_plugin.core.finetune import trainer

        epoch = trainer.Trainer._epoch

        def failing_epoch(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise RuntimeError("injected crash in an epoch")
            return epoch(self, *args, **kwargs)

        trainer.Trainer._epoch = failing_epoch


def main() -> int:
    import torch

    torch.set_num_threads(1)
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    rank = int(os.environ.get("RANK", 0))
    _inject_failure(spec, rank)
    out = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", 1))}
    try:
        if spec["job"] == "predict":
            from geoml_plugin.core.predict import PredictConfig, run_predict

            res = run_predict(PredictConfig(**spec["config"]))
            out.update(valid_pixels=res.valid_pixels, tiles=res.tiles, class_counts=res.class_counts,
                       value_range=list(res.value_range), output_path=res.output_path)
        else:
            from geoml_plugin.core.finetune.job import FinetuneConfig, run_finetune

            res = run_finetune(FinetuneConfig(**spec["config"]))
            out.update(metrics={k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))},
                       history=res.history, n_train=res.n_train, batch_size=res.batch_size,
                       learning_rate=res.learning_rate, world_size_trained=res.meta.extra["training"].get("world_size"))
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out.update(error=str(exc), error_type=type(exc).__name__)
        code = 1
    with open(os.path.join(spec["results"], f"result-{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
