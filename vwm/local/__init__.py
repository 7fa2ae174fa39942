"""Running VWM on one machine: the embedded control plane (`vwm up`) and the offline demo."""
