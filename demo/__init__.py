"""A guided demo of the running platform (`scripts/demo`): one customer's story driven through the public APIs, the
hosted pages, the development mailbox and the inbound SMTP server only. See demo/__main__.py."""
