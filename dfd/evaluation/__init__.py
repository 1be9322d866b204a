"""Scoring a model's P(fake): metrics, plots, the report, and the evaluate/predict/export machinery.

metrics   compute_metrics, choose_threshold, aggregate_scores (numpy + scikit-learn only)
plots     confusion matrix, ROC, precision-recall and score histograms as PNG and TensorBoard images
report    the printed report (seed style: accuracy and loss, classification report, confusion matrix,
          sample predictions, AUC)
loading   a run or export directory -> safe-mode Keras model, its preprocessing and threshold
evaluate  a split of a TFRecord folder -> metrics.json, plots, predictions.csv, threshold.json
predict   image/video files -> records via the converter's make_record -> P(fake) per file
export    a run -> SavedModel serving uint8 -> P(fake), verified by reloading

The command-line entry points are dfd.evaluate, dfd.predict and dfd.export.
"""
