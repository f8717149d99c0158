"""Amazon Connect live media from Kinesis Video Streams: an incremental Matroska reader (ebml), the
layout of Connect's fragments (connect) and the GetMedia pull that feeds a call (puller)."""
