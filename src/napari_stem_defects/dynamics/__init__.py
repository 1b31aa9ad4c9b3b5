"""Image series: drift registration, column tracking, events, instability and unstable clusters."""
