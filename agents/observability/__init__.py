"""What a deployment sees of the worker, attached from outside the data path: Prometheus
metrics (`metrics`, with `multiproc` for job processes), log context (`logs`) and
OpenTelemetry tracing (`tracing`). Nothing here is imported by the audio path itself."""
