--- Cryptography (libsodium): the native module as it is.  See
-- runtime/types/crypto.lua for every function.
return require "aitbc.native.crypto"
