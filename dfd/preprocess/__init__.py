"""One file to the frames of one record: what conversion and prediction share, so a model is fed
at prediction time exactly what it was trained on.

  media         what a file is, judged from its first bytes (only regular files are read)
  image_headers an image's size from its header, per format, so a huge one is refused before decoding
  video_reader  sample full-resolution RGB frames from a video in one pass (frames over --max_frame_pixels
                refused from the stream's header); the one frame resize
  image_reader  read any image as RGB uint8 (gray, RGBA, 16-bit, EXIF-rotated)
  faces         MTCNN face detection on a downscaled copy, square crops of the main face
  face_tracks   the main-face track, interpolation of misses, smoothing (pure numpy)
  records       one file -> RecordContent -> serialized tf.train.Example

dfd.convert writes these records into shards; dfd.evaluation.predict (dfd.predict, dfd.serve) builds
one per file with the same code. Nothing here imports TensorFlow at module level (converter workers
import it: see dfd.convert); faces loads it with the detector, records.encode_content with the schema.
"""
