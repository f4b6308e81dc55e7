"""Tools built on the framework: gradient checking, model summaries, plots."""
