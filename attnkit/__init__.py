"""attnkit: every attention mechanism, correct and fast, on every Keras 3 backend."""

from attnkit._default_backend import apply_default_backend

apply_default_backend()

from attnkit import decoding as decoding  # noqa: E402
from attnkit import explain as explain  # noqa: E402
from attnkit import layers as layers  # noqa: E402
from attnkit import ops as ops  # noqa: E402
from attnkit import sampling as sampling  # noqa: E402
from attnkit.layers import AdditiveAttention as AdditiveAttention  # noqa: E402
from attnkit.layers import Attention as Attention  # noqa: E402
from attnkit.layers import AttentionPooling as AttentionPooling  # noqa: E402
from attnkit.layers import AttentionRNNCell as AttentionRNNCell  # noqa: E402
from attnkit.layers import BahdanauAttention as BahdanauAttention  # noqa: E402
from attnkit.layers import ForwardAttention as ForwardAttention  # noqa: E402
from attnkit.layers import GroupedQueryAttention as GroupedQueryAttention  # noqa: E402
from attnkit.layers import GroupQueryAttention as GroupQueryAttention  # noqa: E402
from attnkit.layers import HardAttention as HardAttention  # noqa: E402
from attnkit.layers import LocalAttention as LocalAttention  # noqa: E402
from attnkit.layers import LocationSensitiveAttention as LocationSensitiveAttention  # noqa: E402
from attnkit.layers import LuongAttention as LuongAttention  # noqa: E402
from attnkit.layers import MonotonicAttention as MonotonicAttention  # noqa: E402
from attnkit.layers import MultiHeadAttention as MultiHeadAttention  # noqa: E402
from attnkit.maps import attention_maps as attention_maps  # noqa: E402
from attnkit.version import __version__ as __version__  # noqa: E402
