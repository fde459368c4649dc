"""Type stub for the compiled codec (its twin is agentos.protocol.codec)."""
from agentos.protocol.codec import Frame as Frame, FrameDecoder as FrameDecoder
from agentos.protocol.codec import append_frame as append_frame, encode_frame as encode_frame
