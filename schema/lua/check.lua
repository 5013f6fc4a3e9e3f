return "a\tb \"q\""
