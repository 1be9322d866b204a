"""`python -m dfd.serve --model=RUN_OR_EXPORT_DIR [--host=127.0.0.1] [--port=8000] [--max_upload_mb=200]`.

Loads the model once and serves the page (http://HOST:PORT/) and the JSON API (see dfd.serve.app).
Binds to 127.0.0.1 by default: only this machine can reach it. --host=0.0.0.0 opens it to the network
(there is no authentication: do that only on a network you trust).
"""

from __future__ import annotations

from absl import flags

from dfd import cli


def define_flags() -> None:
    from dfd.evaluation.metrics import AGGREGATE_METHODS  # imports TensorFlow: quiet it first (__main__)
    from dfd.preprocess import video_reader

    flags.DEFINE_string("model", None, "Run directory (trainer) or export directory (dfd.export).", required=True)
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind; the default reaches only this machine.")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_float("max_upload_mb", 200, "Larger uploads are refused (413) while they stream in.")
    flags.DEFINE_integer("video_frames", 16, "Image model given a video: frames sampled and scored (as dfd.predict).")
    flags.DEFINE_enum("aggregate", "mean", list(AGGREGATE_METHODS),
                      "Image model given a video: how its frame scores become the video's score.")
    flags.DEFINE_integer("batch_size", 16, "Most uploads scored in one batch.")
    flags.DEFINE_integer("max_frame_pixels", video_reader.MAX_FRAME_PIXELS, "An uploaded video whose frames have "
                         "more pixels (width x height, from its header) is refused before decoding (as dfd.predict).")


def main(argv) -> int:
    del argv
    values = flags.FLAGS
    import numpy as np
    import uvicorn

    from dfd.evaluation import loading
    from dfd.serve.app import create_app

    loaded = loading.load(values.model)
    loaded.score(np.zeros((1,) + loaded.input_shape, np.uint8))   # trace once now, not on the first upload
    application = create_app(loaded, values.max_upload_mb, values.video_frames, values.aggregate, values.batch_size,
                             max_frame_pixels=values.max_frame_pixels)
    calibrated = f"; calibrated P(fake): {loaded.calibration_source}" if loaded.temperature != 1.0 else ""
    print(f"dfd.serve: {loaded.model_path} (threshold {loaded.threshold:.4f}{calibrated})\n"
          f"Open http://{values.host}:{values.port}/ in a browser; API: POST /v1/predict, GET /v1/model, "
          "GET /healthz. Ctrl+C stops.", flush=True)
    uvicorn.run(application, host=values.host, port=values.port, log_level="warning")
    return 0


if __name__ == "__main__":
    cli.quiet_tensorflow()   # before define_flags, which imports TensorFlow (cli.run does it again: idempotent)
    define_flags()
    cli.run(main, "dfd.serve")
