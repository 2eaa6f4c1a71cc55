"""The agent: scheduler, heartbeats, sampling and the pipeline to the outputs."""
