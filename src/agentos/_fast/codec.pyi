"""Type stub for the compiled codec (its twin is agentos.protocol.codec)."""
from agentos.protocol.codec import Frame as Frame
from agentos.protocol.codec import FrameDecoder as FrameDecoder
from agentos.protocol.codec import append_frame as append_frame
from agentos.protocol.codec import encode_frame as encode_frame
