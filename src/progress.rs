//! Progress of `once`: a bar on a terminal, plain periodic lines otherwise.
