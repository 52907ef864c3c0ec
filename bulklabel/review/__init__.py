"""Closing the loop with people, TensorFlow-free: which records to review and where they come
from (source, select), Label Studio's formats (labelstudio, image_urls), the commands' work
(export, import_reviews, dataset_out, agreement) and the HTML job report (report/)."""
