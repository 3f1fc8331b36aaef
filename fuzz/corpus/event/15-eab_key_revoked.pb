‚

kid-fuzz-1