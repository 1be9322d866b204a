"""`python -m dfd.serve --model=RUN_OR_EXPORT_DIR [--host=127.0.0.1] [--port=8000] [--max_upload_mb=200]`.

Loads the model once and serves the page (http://HOST:PORT/) and the JSON API (see dfd.serve.app).
Binds to 127.0.0.1 by default: only this machine can reach it. --host=0.0.0.0 opens it to the network
(there is no authentication: do that only on a network you trust); the start-up lines say so.
The flags are checked, and the address bound, before the model loads: a wrong --host, a busy --port or
a limit that would refuse every upload is one line (dfd.cli), not a traceback after the wait.
"""

from __future__ import annotations

import socket

from absl import flags

from dfd import cli


def define_flags() -> None:
    from dfd.evaluation.metrics import AGGREGATE_METHODS  # imports TensorFlow: quiet it first (__main__)
    from dfd.preprocess import video_reader

    flags.DEFINE_string("model", None, "Run directory (trainer) or export directory (dfd.export).", required=True)
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind; the default reaches only this machine.")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_list("allowed_hosts", [], "More names browsers may reach the server by (the Host header), e.g. "
                      "this machine's DNS name; the bound address, and localhost for a loopback bind, always are.")
    flags.DEFINE_float("max_upload_mb", 200, "Larger uploads are refused (413) while they stream in.")
    flags.DEFINE_float("upload_idle_timeout_s", 30, "An upload that sends nothing for this long is dropped (408).")
    flags.DEFINE_float("upload_timeout_s", 600, "An upload that takes longer than this in all is dropped (408).")
    flags.DEFINE_integer("video_frames", 16, "Image model given a video: frames sampled and scored (as dfd.predict).")
    flags.DEFINE_enum("aggregate", "mean", list(AGGREGATE_METHODS),
                      "Image model given a video: how its frame scores become the video's score.")
    flags.DEFINE_integer("batch_size", 16, "Most uploads scored in one batch.")
    flags.DEFINE_integer("max_frame_pixels", video_reader.MAX_FRAME_PIXELS, "An uploaded video whose frames have "
                         "more pixels (width x height, from its header) is refused before decoding (as dfd.predict).")


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound to --host and --port (uvicorn listens on it)."""
    if not 0 < port < 65536:
        raise ValueError(f"--port={port} must be between 1 and 65535")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host={host} is neither an address nor a name that resolves ({error.strerror}): use "
                         "--host=127.0.0.1 (this machine only) or --host=0.0.0.0 (every network)") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on --host={host} --port={port}: {error.strerror}; choose another --port, "
                         "or a --host that is an address of this machine") from None
    return sock


def start_up_lines(loaded, host: str, port: int, stale: list) -> list[str]:
    """What the server says when it starts: the model, where to open it, who else can reach it."""
    from dfd.serve import guard

    calibrated = f"; calibrated P(fake): {loaded.calibration_source}" if loaded.temperature != 1.0 else ""
    lines = [f"dfd.serve: {loaded.model_path} (threshold {loaded.threshold:.4f}{calibrated})"]
    if stale:
        lines.append(f"dfd.serve: removed {len(stale)} upload folder(s) left by servers that were killed: "
                     + ", ".join(str(path) for path in stale))
    if not guard.is_loopback(host):
        lines.append(f"dfd.serve: --host={host}: other machines on the network can reach this server, and it has no "
                     f"authentication: anyone who reaches port {port} can send files to it. --host=127.0.0.1 keeps "
                     "it to this machine")
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    shown = f"[{shown}]" if ":" in shown else shown
    lines.append(f"Open http://{shown}:{port}/ in a browser; API: POST /v1/predict, GET /v1/model, GET /healthz. "
                 "Ctrl+C stops.")
    return lines


def main(argv) -> int:
    del argv
    values = flags.FLAGS
    import numpy as np
    import uvicorn

    from dfd.evaluation import loading
    from dfd.serve.app import check_options, create_app

    check_options(values.max_upload_mb, values.video_frames, values.batch_size, values.upload_idle_timeout_s,
                  values.upload_timeout_s)
    sock = listening_socket(values.host, values.port)
    loaded = loading.load(values.model)
    loaded.score(np.zeros((1,) + loaded.input_shape, np.uint8))   # trace once now, not on the first upload
    application = create_app(loaded, values.max_upload_mb, values.video_frames, values.aggregate, values.batch_size,
                             host=values.host, allowed_hosts=values.allowed_hosts,
                             upload_idle_timeout_s=values.upload_idle_timeout_s,
                             upload_timeout_s=values.upload_timeout_s, max_frame_pixels=values.max_frame_pixels)
    print("\n".join(start_up_lines(loaded, values.host, values.port, application.state.stale_removed)), flush=True)
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    server.run(sockets=[sock])
    return 0 if server.started else 1


if __name__ == "__main__":
    cli.quiet_tensorflow()   # before define_flags, which imports TensorFlow (cli.run does it again: idempotent)
    define_flags()
    cli.run(main, "dfd.serve")
