"""Scoring a model's P(fake) against labels: metrics, threshold choice, clip aggregation, plots, report.

metrics  compute_metrics, choose_threshold, aggregate_scores (numpy + scikit-learn only)
plots    confusion matrix, ROC, precision-recall and score histograms as PNG and TensorBoard images
report   the printed report (seed style: accuracy and loss, classification report, confusion matrix,
         sample predictions, AUC)

dfd.evaluate, dfd.predict and dfd.export are the command-line entry points built on these.
"""
