"""Writes dfd's embedded sample dataset: SYNTHETIC faces, only for trying the tool.

    python tools/make_sample_data.py --output=sample_data

Writes DIR/videos/{train,val,test}/{real,fake}/*.mp4 and
DIR/images/{train,val,test}/{real,fake}/*.jpg (256x256), half real and half
fake, plus DIR/videos.csv and DIR/images.csv (path,label,split,group,swap_source).
Real examples are procedurally drawn faces; fakes carry a simulated face swap
(soft blend seam, colour mismatch, blurred inner face, jittering boundary).
This data is synthetic and much easier than real deepfakes: use it to try the
tool end to end, never to judge how good a detector is. The same --seed gives
byte-identical files; no identity appears in two splits.
"""

import os

from absl import flags

from dfd import cli
from dfd.sample_data import write_sample_dataset


def define_flags() -> None:
    flags.DEFINE_string("output", None, "Folder to write the sample dataset into (an earlier sample "
                        "dataset there is replaced).", required=True)
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives byte-identical files.")
    flags.DEFINE_integer("videos_per_class", 80, "Videos per class (real, fake) over all splits; "
                         "0 writes no videos.", lower_bound=0)
    flags.DEFINE_integer("images_per_class", 40, "Images per class (real, fake) over all splits; "
                         "0 writes no images.", lower_bound=0)
    flags.DEFINE_float("val_fraction", 0.2, "Fraction of each class that goes to the val split.")
    flags.DEFINE_float("test_fraction", 0.2, "Fraction of each class that goes to the test split.")
    flags.DEFINE_integer("frames_per_video", 20, "Frames in each clip.", lower_bound=1)
    flags.DEFINE_integer("video_size", 128, "Width and height of the clips in pixels.", lower_bound=32)
    flags.DEFINE_integer("image_size", 256, "Width and height of the images in pixels.", lower_bound=32)
    flags.DEFINE_float("fps", 24.0, "Frame rate written into the mp4 files.")
    flags.DEFINE_integer("workers", min(2, os.cpu_count() or 1), "Processes drawing files; the "
                         "files are the same for any number.", lower_bound=1)


def main(argv) -> None:
    del argv
    FLAGS = flags.FLAGS
    summary = write_sample_dataset(
        FLAGS.output, videos_per_class=FLAGS.videos_per_class, images_per_class=FLAGS.images_per_class,
        seed=FLAGS.seed, frames_per_video=FLAGS.frames_per_video,
        video_size=(FLAGS.video_size, FLAGS.video_size), image_size=FLAGS.image_size, fps=FLAGS.fps,
        val_fraction=FLAGS.val_fraction, test_fraction=FLAGS.test_fraction,
        workers=FLAGS.workers)
    print(summary.format())


if __name__ == "__main__":
    define_flags()
    cli.run(main, "make_sample_data", quiet=False)   # draws with numpy and OpenCV: no TensorFlow to quiet
