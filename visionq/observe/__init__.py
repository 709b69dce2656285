"""What visionq's processes tell operators: Prometheus metrics (`metrics`) and log lines (`logs`)."""
