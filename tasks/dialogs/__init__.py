"""Dialog generation by the multi-agent simulation, the target model's complexity loss and self-guidance."""
