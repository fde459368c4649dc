"""Agent messaging: durable mailboxes (SEND, RECV, BROADCAST, REGISTER, ACK) and pub/sub."""
