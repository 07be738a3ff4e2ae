"""Process-level helpers: progress bars, the CPU allocator setting, error messages."""
