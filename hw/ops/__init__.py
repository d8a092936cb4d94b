"""The hardware ops of ``dataflow.onnx`` (ONNX domain ``bnnflow.hw``), one module each."""

from bnnflow.hw.ops.label_select import LabelSelect
from bnnflow.hw.ops.mvtu import MVTU
from bnnflow.hw.ops.sliding_window import SlidingWindow
from bnnflow.hw.ops.streaming_maxpool import StreamingMaxPool
from bnnflow.hw.ops.thresholding import Thresholding

# qonnx finds a domain's ops in the ``custom_op`` dict of the module the domain names.
custom_op = {
    "MVTU": MVTU,
    "SlidingWindow": SlidingWindow,
    "StreamingMaxPool": StreamingMaxPool,
    "Thresholding": Thresholding,
    "LabelSelect": LabelSelect,
}

__all__ = ["MVTU", "SlidingWindow", "StreamingMaxPool", "Thresholding", "LabelSelect", "custom_op"]
