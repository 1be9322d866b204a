"""Where the model saw a fake: Grad-CAM heatmaps on the face crops, drawn as one picture per file.

    feature_map_path(model) -> [layer, ...]          # outermost first; the last is the explained layer
    grad_cam(model, batch) -> (heatmaps, logits)     # heatmaps float32 (N, H, W) in [0, 1], one per frame
    explanation_figure(frames, heatmaps, ...)        # crops + overlays, per-frame score strip, verdict
    explain_results(loaded, items, directory)        # dfd.predict --explain=DIR
    explain_split(loaded, data, split, scored, ...)  # dfd.evaluate --explain=N

The explained layer is found, not named: the last layer (in graph order) whose output is a spatial
feature map (B, h, w, c) with h*w > 1, searched from the output backwards and into nested models and
TimeDistributed wrappers (image_cnn's frame_features, cnn_lstm's TimeDistributed frame CNN, any
keras.applications backbone, a trainer wrapper of augmentation layers around a model). Input and
preprocessing layers never count, so a model without a convolution is refused rather than explained
by its input.

The model is re-run eagerly node by node (Keras' own graph walk, Functional._run_through_graph), with
the explained layer's output watched by the gradient tape and every layer in inference mode. The
gradient is taken of the fake logit, read from the head before its sigmoid/softmax (a probability
saturates at 1.0 in float32, where its gradient is exactly zero): Dense(1, sigmoid) gives z, Dense(2,
softmax) gives z_fake - z_real. The heatmap is evidence *for fake* whatever the verdict: ReLU of the
gradient-weighted channel sum, scaled by its maximum over all frames of the file (so a frame with little
evidence stays dim), bilinearly resized to the crop.

A SavedModel (export directory) has no layers to hook: explanations use the model.keras that dfd.export
writes beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dfd import atomic_files
from dfd.data import pipeline, schema

MAX_FRAMES_SHOWN = 32


def _is_feature_map(layer) -> bool:
    if isinstance(layer, keras.layers.InputLayer) or ".preprocessing." in type(layer).__module__:
        return False
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):   # a layer called more than once has no single output
        return False
    spatial = shape[-3:-1]
    rank = 5 if isinstance(layer, keras.layers.TimeDistributed) else 4
    return len(shape) == rank and None not in spatial and spatial[0] * spatial[1] > 1


def _graph_layers(model) -> list:
    return list(getattr(model, "_functional", None).layers if getattr(model, "_functional", None) else model.layers)


def feature_map_path(model: keras.Model) -> list:
    """The chain of layers from `model` down to the explained feature-map layer (see module doc)."""
    def search(container) -> list | None:
        for layer in reversed(_graph_layers(container)):
            inner = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
            if isinstance(inner, keras.Model):
                found = search(inner)
                if found:
                    return [layer] + ([inner] if inner is not layer else []) + found
            elif _is_feature_map(layer):
                return [layer]
        return None

    found = search(model)
    if not found:
        raise ValueError(f"model {model.name!r} has no spatial feature map (a convolution's (h, w, c) output "
                         "larger than 1x1) to explain; Grad-CAM needs a convolutional model")
    return [model] + found


class _Recorder:
    """Runs a model eagerly with the explained layer's output watched and the head's logit kept."""

    def __init__(self, path: list, tape: tf.GradientTape):
        self.path, self.tape = path, tape
        self.feature_map = None
        self.logit = None

    def _head(self, layer, inputs):
        kernel = layer.kernel
        z = tf.matmul(tf.cast(inputs, kernel.dtype), kernel)
        if layer.use_bias:
            z = z + layer.bias
        z = tf.cast(z, tf.float32)
        if z.shape[-1] == 1:
            self.logit = z[:, 0]
        elif z.shape[-1] == 2:
            self.logit = z[:, 1] - z[:, 0]
        return layer(inputs, training=False)

    def _op(self, operation, depth: int):
        on_path = depth + 1 < len(self.path) and operation is self.path[depth + 1]
        activation = getattr(getattr(operation, "activation", None), "__name__", "")
        is_head = isinstance(operation, keras.layers.Dense) and activation in ("sigmoid", "softmax")

        def call(*args, **kwargs):
            if on_path:
                return self.run(operation, args[0], depth + 1)
            if is_head:
                return self._head(operation, args[0])
            if "training" in getattr(operation, "_call_context_args", {}):
                kwargs["training"] = False
            return operation(*args, **kwargs)
        return call

    def run(self, layer, inputs, depth: int = 0):
        if depth == len(self.path) - 1:            # the explained layer
            output = layer(inputs, training=False)
            self.tape.watch(output)
            self.feature_map = output
            return output
        if isinstance(layer, keras.layers.TimeDistributed):
            # Frames of all clips as one batch through the wrapped model, then back to (B, T, ...).
            batch, steps = tf.shape(inputs)[0], inputs.shape[1]
            flat = tf.reshape(inputs, tf.concat([[-1], tf.shape(inputs)[2:]], 0))
            output = self.run(layer.layer, flat, depth + 1)
            return tf.reshape(output, tf.concat([[batch, steps], tf.shape(output)[1:]], 0))
        graph = getattr(layer, "_functional", None) or layer
        return graph._run_through_graph(inputs, operation_fn=lambda operation: self._op(operation, depth))


def grad_cam(model: keras.Model, batch: np.ndarray, path: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (frames, H, W) in [0, 1] for a uint8 batch in the model's input shape, and the fake logits (B,).

    An image model's batch (N, H, W, 3) gives N heatmaps; a video model's (B, T, H, W, 3) gives B*T,
    each frame's map weighted by the gradient of its clip's logit.
    """
    path = path or feature_map_path(model)
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        recorder = _Recorder(path, tape)
        outputs = recorder.run(model, inputs)
        if recorder.logit is None:   # a head dfd does not build: the logit of the output probability
            probability = tf.cast(outputs[:, -1] if outputs.shape[-1] else outputs, tf.float32)
            probability = tf.clip_by_value(probability, 1e-7, 1 - 1e-7)
            recorder.logit = tf.math.log(probability) - tf.math.log1p(-probability)
        target = tf.reduce_sum(recorder.logit)
    feature_map = recorder.feature_map
    gradients = tape.gradient(target, feature_map)
    feature_map = tf.cast(tf.reshape(feature_map, [-1, *feature_map.shape[-3:]]), tf.float32).numpy()
    gradients = tf.cast(tf.reshape(gradients, [-1, *gradients.shape[-3:]]), tf.float32).numpy()
    weights = gradients.mean(axis=(1, 2))                                    # (N, c)
    cams = np.maximum(np.einsum("nhwc,nc->nhw", feature_map, weights), 0.0)
    height, width = batch.shape[-3:-1]
    resized = tf.image.resize(cams[..., None], (height, width), method="bilinear").numpy()[..., 0]
    return np.maximum(resized, 0.0).astype(np.float32), recorder.logit.numpy()


def normalize(heatmaps: np.ndarray) -> np.ndarray:
    """Scaled by the maximum over all frames of one file; all zeros stay zeros (nothing points to fake)."""
    peak = float(np.max(heatmaps)) if heatmaps.size else 0.0
    return (heatmaps / peak if peak > 0 else np.zeros_like(heatmaps)).astype(np.float32)


def file_heatmaps(loaded, frames: np.ndarray) -> np.ndarray:
    """Normalised heatmaps (T, H, W) for one file's decoded frames (T, H, W, 3), padding removed."""
    return normalize(_raw_heatmaps(loaded, frames))


def explanation_figure(frames: np.ndarray, heatmaps: np.ndarray, title: str, probability: float, threshold: float,
                       frame_scores=None):
    """Crops with the heatmap overlaid (rows of up to 8), then per-frame P(fake) against the threshold."""
    from dfd.evaluation.plots import plt  # pyplot through plots, which sets the Agg backend first

    frames, heatmaps = frames[:MAX_FRAMES_SHOWN], heatmaps[:MAX_FRAMES_SHOWN]
    count = len(frames)
    columns = min(count, 8)
    rows = -(-count // columns)
    figure = plt.figure(figsize=(max(1.3 * columns, 4.0), 1.3 * rows + 1.9), dpi=100)
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [0.8])
    for index in range(count):
        axis = figure.add_subplot(grid[index // columns, index % columns])
        axis.imshow(frames[index])
        axis.imshow(heatmaps[index], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        axis.set_axis_off()
        axis.set_title(f"{index}" if frame_scores is None else f"{index}: {frame_scores[index]:.2f}", fontsize=7)
    strip = figure.add_subplot(grid[rows, :])
    if frame_scores is not None and len(frame_scores) > 1:   # an image model's frames: one score each
        scores = list(frame_scores)[:count]
        strip.bar(range(len(scores)), scores, color=["tab:red" if s >= threshold else "tab:green" for s in scores])
        strip.axhline(threshold, color="black", linestyle="--", linewidth=1)
        strip.set(xlabel="frame", ylabel="P(fake)", xlim=(-0.6, len(scores) - 0.4), ylim=(0, 1),
                  xticks=range(len(scores)))
    else:                                                     # one score for the image or the whole clip
        strip.barh([0], [probability], color="tab:red" if probability >= threshold else "tab:green")
        strip.axvline(threshold, color="black", linestyle="--", linewidth=1)
        strip.set(yticks=[], xlim=(0, 1), xlabel="P(fake)")
    verdict = schema.LABEL_NAMES[int(probability >= threshold)].upper()
    figure.suptitle(f"{title}\n{verdict}: P(fake) {probability:.3f}, threshold {threshold:.3f} "
                    "(heatmap: evidence for fake)", fontsize=8)
    figure.tight_layout()
    return figure


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name)[:80] or "file"


def explain_results(loaded, items, directory: str | Path) -> list[Path]:
    """PNG per scored file: items are (index, FileResult, frames uint8 (T, H, W, 3) without padding)."""
    from dfd.evaluation import plots

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, result, frames in items:
        heatmaps = file_heatmaps(loaded, frames)
        figure = explanation_figure(frames, heatmaps, result.path, result.fake_probability, result.threshold,
                                    result.frame_scores)
        path = directory / f"{index:04d}_{safe_name(result.path)}.png"
        atomic_files.write_bytes(path, plots.figure_png(figure))
        import matplotlib.pyplot as plt

        plt.close(figure)
        result.explanation = str(path)
        written.append(path)
    return written


def select_examples(labels, scores, threshold: float, count: int) -> dict[str, list[int]]:
    """Indices of the `count` most confident mistakes and correct answers of each class.

    Most confident: farthest from the threshold.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    predicted = (scores >= threshold).astype(int)
    distance = np.abs(scores - threshold)
    groups = {}
    for label, name in enumerate(schema.LABEL_NAMES):
        for outcome, chosen in (("mistake", predicted != label), ("correct", predicted == label)):
            indices = np.flatnonzero((labels == label) & chosen)
            # Stable sort: ties keep the split's order, so the choice is deterministic.
            groups[f"{outcome}_{name}"] = indices[np.argsort(-distance[indices], kind="stable")][:count].tolist()
    return groups


def _collect_frames(data, split: str, sources: set, batch_size: int) -> dict[str, list[np.ndarray]]:
    """The decoded clips (padding removed) of the records of `sources`, read again from the split."""
    shape = data.preprocessing.record_shape
    dataset, _ = pipeline.make_eval_dataset(data, split, batch_size=batch_size, details=True)
    clips: dict[str, list[np.ndarray]] = {}
    for frames, _, names, padded in dataset.as_numpy_iterator():
        for row, name in enumerate(schema.decode_text(source) for source in names):
            if name in sources:
                clips.setdefault(name, []).append(frames[row][:shape.num_frames - int(padded[row])]
                                                  if shape.num_frames > 1 else frames[row])
    return clips


def explain_split(loaded, data, split: str, scored, threshold: float, count: int, directory: Path,
                  tensorboard_dir: Path | None = None, batch_size: int = 64) -> list[Path]:
    """dfd.evaluate --explain=N: pictures of the chosen examples as PNGs and TensorBoard images."""
    from dfd.evaluation import plots
    from dfd.evaluation.plots import plt

    groups = select_examples(scored.labels, scored.scores, threshold, count)
    wanted = {str(scored.sources[index]) for indices in groups.values() for index in indices}
    clips = _collect_frames(data, split, wanted, batch_size)
    directory.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(tensorboard_dir)) if tensorboard_dir is not None else None
    written = []
    for group, indices in groups.items():
        for rank, index in enumerate(indices):
            source = str(scored.sources[index])
            frames_list, heatmap_list = [], []
            for clip in clips.get(source, [])[:4]:
                frames_list.append(clip)
                heatmap_list.append(_raw_heatmaps(loaded, clip))
            if not frames_list:
                continue
            frames = np.concatenate(frames_list)
            heatmaps = normalize(np.concatenate(heatmap_list))
            frame_scores = (scored.frame_scores or {}).get(source)
            label = schema.LABEL_NAMES[int(scored.labels[index])]
            figure = explanation_figure(frames, heatmaps, f"{group.replace('_', ' ')} #{rank + 1}: {source} "
                                        f"(true {label})", float(scored.scores[index]), threshold, frame_scores)
            png = plots.figure_png(figure)
            plt.close(figure)
            path = directory / f"{group}_{rank:02d}_{safe_name(source)}.png"
            atomic_files.write_bytes(path, png)
            written.append(path)
            if writer is not None:
                with writer.as_default():
                    tf.summary.image(f"explain/{group}", tf.io.decode_png(png, channels=4)[tf.newaxis], step=rank)
    if writer is not None:
        writer.flush()
        writer.close()
    return written


def _raw_heatmaps(loaded, clip: np.ndarray) -> np.ndarray:
    """Un-normalised heatmaps of one decoded clip (T, H, W, 3); a video model gets it padded back to its length."""
    if loaded.scores_frames:
        return grad_cam(loaded.model, clip)[0]
    steps = loaded.input_shape[0]
    padded = np.concatenate([clip, np.repeat(clip[-1:], steps - len(clip), axis=0)]) if len(clip) < steps else clip
    return grad_cam(loaded.model, padded[np.newaxis])[0][:len(clip)]
