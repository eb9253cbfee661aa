"""The persister: commits accepted messages to the message store, one writer per conversation."""
