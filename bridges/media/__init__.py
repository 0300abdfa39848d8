"""Room files and course materials on IPFS."""
