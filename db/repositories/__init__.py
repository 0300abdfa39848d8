"""One repository per aggregate; each takes its Database in the constructor and returns frozen rows."""
