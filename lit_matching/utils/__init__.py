"""Process-level helpers: progress bars and the CPU allocator setting."""
