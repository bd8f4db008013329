"""SAM 2 model components, one module each (Meta's state-dict layout)."""
