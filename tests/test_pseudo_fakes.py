"""Self-blended pseudo-fakes: the mask, the blend, the labels, and the pipeline and trainer paths."""

import numpy as np
import pytest
import tensorflow as tf

from dfd import train_flags
from dfd.data import pipeline, pseudo_fakes, schema
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

# The astronaut's keypoints and MTCNN face box in dfd's crop of her (margin 1.3), as measured
# with dfd.preprocess.faces.crop_faces on dfd.testing.face_frames (face 100 px wide in a 640x360 frame).
ASTRONAUT_KEYPOINTS = [0.371, 0.382, 0.667, 0.400, 0.514, 0.575, 0.353, 0.648, 0.654, 0.663]
ASTRONAUT_FACE_BOX = (0.217, 0.134, 0.795, 0.871)   # x0, y0, x1, y1


def _clips(num_clips, num_frames=2, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_clips, num_frames, size, size, 3), dtype=np.uint8)


def _keypoints(num_clips, num_frames=2, values=ASTRONAUT_KEYPOINTS):
    return np.tile(np.asarray(values, np.float32), (num_clips, num_frames))


def test_mask_lies_inside_the_face_box_and_outside_pixels_are_unchanged():
    clips = _clips(64)
    blended, masks = pseudo_fakes.self_blend(clips, _keypoints(64), tf.constant([1, 2]))
    blended, masks = blended.numpy(), masks.numpy()[..., 0]
    assert blended.dtype == np.uint8 and blended.shape == clips.shape
    size = clips.shape[2]
    centres = (np.arange(size) + 0.5) / size
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    inside_x = (centres[None, :] >= x0) & (centres[None, :] <= x1)
    inside_y = (centres[:, None] >= y0) & (centres[:, None] <= y1)
    outside = ~(inside_x & inside_y)
    assert masks[:, :, outside].max() == 0.0          # 64 random masks, none leaves the face box
    assert (masks.max(axis=(2, 3)) > 0.2).all()       # every clip is blended somewhere
    unmasked = np.broadcast_to((masks == 0)[..., None], clips.shape)
    np.testing.assert_array_equal(blended[unmasked], clips[unmasked])
    assert (blended[~unmasked] != clips[~unmasked]).mean() > 0.5


def test_a_fixed_seed_reproduces_the_sample_and_another_seed_differs():
    clips, keypoints = _clips(4), _keypoints(4)
    first, _ = pseudo_fakes.self_blend(clips, keypoints, tf.constant([7, 8]))
    again, _ = pseudo_fakes.self_blend(clips, keypoints, tf.constant([7, 8]))
    other, _ = pseudo_fakes.self_blend(clips, keypoints, tf.constant([7, 9]))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert (first.numpy() != other.numpy()).any()


def test_every_frame_of_a_clip_gets_the_same_transform_and_mask():
    frame = _clips(1, num_frames=1, seed=3)
    clips = np.repeat(np.repeat(frame, 3, axis=1), 5, axis=0)    # 5 clips of 3 identical frames
    blended, masks = pseudo_fakes.self_blend(clips, _keypoints(5, 3), tf.constant([4, 5]))
    blended, masks = blended.numpy(), masks.numpy()
    for clip, mask in zip(blended, masks, strict=True):
        np.testing.assert_array_equal(clip[1:], np.broadcast_to(clip[:1], clip[1:].shape))
        np.testing.assert_array_equal(mask[1:], np.broadcast_to(mask[:1], mask[1:].shape))
    assert (blended[0] != blended[1]).any()     # ... while clips draw their own transforms


def test_records_without_keypoints_use_the_centred_fallback():
    clips = _clips(3)
    absent = np.full((3, 2 * 10), schema.KEYPOINTS_ABSENT, np.float32)
    fallback = _keypoints(3, values=np.ravel(pseudo_fakes.FALLBACK_KEYPOINTS))
    from_absent, absent_masks = pseudo_fakes.self_blend(clips, absent, tf.constant([1, 1]))
    from_fallback, fallback_masks = pseudo_fakes.self_blend(clips, fallback, tf.constant([1, 1]))
    np.testing.assert_array_equal(from_absent.numpy(), from_fallback.numpy())
    np.testing.assert_array_equal(absent_masks.numpy(), fallback_masks.numpy())
    # Centred in the crop: the mask's centre of mass is near the middle, and the border is untouched.
    masks = absent_masks.numpy()[..., 0]
    rows = (masks.sum(axis=3) * np.arange(32)).sum(axis=2) / masks.sum(axis=(2, 3))
    cols = (masks.sum(axis=2) * np.arange(32)).sum(axis=2) / masks.sum(axis=(2, 3))
    assert (np.abs(rows - 16.5) < 4).all() and (np.abs(cols - 15.5) < 2).all()
    assert masks[:, :, [0, -1], :].max() == 0 and masks[:, :, :, [0, -1]].max() == 0


def test_apply_blends_a_fraction_of_the_real_clips_and_labels_them_fake():
    num_clips = 400
    clips = _clips(num_clips, num_frames=1, size=8)
    labels = np.array([0, 1] * (num_clips // 2), np.int32)
    out, out_labels = pseudo_fakes.apply(tf.constant(clips), tf.constant(labels),
                                         tf.constant(_keypoints(num_clips, 1)), 0.5, tf.constant([3, 4]))
    out, out_labels = out.numpy(), out_labels.numpy()
    changed = (out != clips).any(axis=(1, 2, 3, 4))
    real = labels == 0
    assert not changed[~real].any() and (out_labels[~real] == 1).all()   # fakes stay as they were
    assert (out_labels[real] == changed[real]).all()                     # blended <=> labelled fake
    assert 0.4 < out_labels[real].mean() < 0.6, out_labels[real].mean()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("mixed"), num_frames=2, size=16,
                              counts={"train": (12, 4), "val": (4, 4)})


def test_pipeline_trains_on_real_clips_only_with_pseudo_fakes(mixed):
    dataset, count, _ = pipeline.make_train_dataset(pipeline.open_dataset(mixed), batch_size=4, seed=1,
                                                    classes="real", pseudo_fakes=pseudo_fakes.PseudoFakes("sbi", 0.5))
    assert count == 12 and pipeline.steps_per_epoch(count, 4, True) == 3
    batches = list(dataset)
    assert len(batches) == 3
    clips = np.concatenate([clips.numpy() for clips, _ in batches])
    labels = np.concatenate([labels.numpy() for _, labels in batches])
    assert clips.shape == (12, 2, 16, 16, 3) and clips.dtype == np.uint8
    assert 0 < labels.sum() < 12          # some real clips became pseudo-fakes, not all
    plain, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(mixed), batch_size=4, seed=1, classes="real")
    assert all((labels.numpy() == 0).all() for _, labels in plain)    # the 4 fakes are dropped


def test_train_step_on_real_clips_with_sbi(mixed, tmp_path):
    common = dict(data=str(mixed), model="cnn_lstm", epochs=1, batch_size=4, verbose=0, patience=0,
                  precision="float32", learning_rate=0.01,
                  hparams={"conv_filters": "4", "kernel_sizes": "3", "frame_dense_units": 4, "lstm_units": 2,
                           "head_units": 2})
    summary = train(train_flags.TrainConfig(run_dir=str(tmp_path / "sbi"), train_classes="real",
                                            pseudo_fakes="sbi", pseudo_fake_fraction=0.5, **common))
    assert summary["num_train"] == 12 and summary["epochs_run"] == 1
    assert np.isfinite(summary["last_epoch"]["loss"])
    assert "--pseudo_fakes=sbi" in (tmp_path / "sbi" / "flags.txt").read_text()
    # Real clips alone are one class: the trainer says how to get fakes.
    with pytest.raises(ValueError, match="--pseudo_fakes=sbi"):
        train(train_flags.TrainConfig(run_dir=str(tmp_path / "real"), train_classes="real", **common))
