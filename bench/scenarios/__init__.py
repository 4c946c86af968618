"""One module per benchmark; each takes the running Stack and the Sizes and returns
its Figures."""
