"""Herald compliance: the stream processor that turns sending outcomes into warnings and suspensions."""
