"""The hardware ops of ``dataflow.onnx`` (ONNX domain ``bnnflow.hw``), one module each."""

from bnnflow.hw.ops.add_streams import AddStreams
from bnnflow.hw.ops.channel_pad import ChannelPad
from bnnflow.hw.ops.downsample import Downsample
from bnnflow.hw.ops.duplicate_streams import DuplicateStreams
from bnnflow.hw.ops.label_select import LabelSelect
from bnnflow.hw.ops.mvtu import MVTU
from bnnflow.hw.ops.sliding_window import SlidingWindow
from bnnflow.hw.ops.streaming_maxpool import StreamingMaxPool
from bnnflow.hw.ops.sum_pool import SumPool
from bnnflow.hw.ops.thresholding import Thresholding

# qonnx finds a domain's ops in the ``custom_op`` dict of the module the domain names.
custom_op = {
    "MVTU": MVTU,
    "SlidingWindow": SlidingWindow,
    "StreamingMaxPool": StreamingMaxPool,
    "Thresholding": Thresholding,
    "LabelSelect": LabelSelect,
    "AddStreams": AddStreams,
    "DuplicateStreams": DuplicateStreams,
    "SumPool": SumPool,
    "Downsample": Downsample,
    "ChannelPad": ChannelPad,
}

__all__ = ["MVTU", "SlidingWindow", "StreamingMaxPool", "Thresholding", "LabelSelect", "AddStreams",
           "DuplicateStreams", "SumPool", "Downsample", "ChannelPad", "custom_op"]
