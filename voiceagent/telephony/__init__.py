"""Phone calls: a SIP bridge with its own RTP stack, and cloud-telephony media streams."""
