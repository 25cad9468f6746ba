"""Fake provider servers on loopback: real wire formats, strict request checks, injectable faults."""
