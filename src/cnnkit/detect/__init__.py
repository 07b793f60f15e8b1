"""Object detection as the course builds it up.

Boxes and IoU (:mod:`cnnkit.detect.boxes`), the course's YOLO post-processing as
plain functions (:mod:`cnnkit.detect.postprocess`: ``filter_boxes``,
``non_max_suppression``, ``yolo_eval``), sliding windows done convolutionally
(:mod:`cnnkit.detect.sliding`), and the detection data formats with a synthetic
shapes generator (:mod:`cnnkit.detect.data`).

Boxes are absolute ``xyxy`` inside, converted with torchvision's names (``xyxy``,
``xywh``, ``cxcywh``).
"""
