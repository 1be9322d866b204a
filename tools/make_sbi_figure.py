"""Regenerates docs/sbi.png: a real face next to self-blended pseudo-fakes of it (README, "Pseudo-fakes").

    python tools/make_sbi_figure.py [--output=docs/sbi.png] [--size=160]

The face is scikit-image's public-domain astronaut photo (Eileen Collins, NASA), composited into
a frame by dfd.testing.face_frames and cropped with dfd's own face crop (MTCNN, keypoints
included), exactly as the converter would store it. Top row: the real crop and four pseudo-fakes
(seeds 1-4); bottom row: the crop with its keypoints, and each pseudo-fake's blend mask.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from absl import flags  # noqa: E402

from dfd import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output", "docs/sbi.png", "Where to write the PNG.")
    flags.DEFINE_integer("size", 160, "Face crop size in pixels (the stored frame size).", lower_bound=32)
    flags.DEFINE_integer("num_fakes", 4, "Pseudo-fakes to show, seeds 1..N.", lower_bound=1)


def main(argv) -> None:
    del argv
    import cv2
    import numpy as np
    import tensorflow as tf

    from dfd.data import pseudo_fakes
    from dfd.data.preprocessing import PreprocessSpec
    from dfd.preprocess import faces
    from dfd.testing.face_frames import face_frame, noise_background

    frame, _ = face_frame(noise_background(np.random.default_rng(0), 480, 360), (240, 170), 150)
    spec = PreprocessSpec(kind="image", num_frames=1, size=FLAGS.size, face_crop="mtcnn")
    crop = faces.crop_faces([frame], spec)
    clip = crop.crops[None]                                 # (1, 1, size, size, 3)
    keypoints = crop.keypoints.reshape(1, -1)
    fakes, masks = [], []
    for seed in range(1, FLAGS.num_fakes + 1):
        blended, mask = pseudo_fakes.self_blend(clip, keypoints, tf.constant([seed, 0]))
        fakes.append(blended.numpy()[0, 0])
        masks.append(np.repeat((mask.numpy()[0, 0] * 255).astype(np.uint8), 3, axis=2))

    marked = crop.crops[0].copy()
    for x, y in crop.keypoints.reshape(5, 2) * FLAGS.size:
        cv2.circle(marked, (int(round(x)), int(round(y))), 2, (255, 255, 0), -1)
    gap = np.full((FLAGS.size, 4, 3), 255, np.uint8)

    def row(images):
        parts = []
        for image in images:
            parts += [image, gap]
        return np.concatenate(parts[:-1], axis=1)

    top = row([crop.crops[0]] + fakes)
    bottom = row([marked] + masks)
    figure = np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    output = Path(FLAGS.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(output), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {output} ({output.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    define_flags()
    cli.run(main, "make_sbi_figure")
