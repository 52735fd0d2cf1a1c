//! 7. Who a client is: station, session and pid claims in the hello, and a copied host key.
