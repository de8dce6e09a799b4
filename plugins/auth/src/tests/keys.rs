//! Fixed key pairs for the tests (generated once with openssl; never used outside tests), so
//! no test waits for RSA key generation.

/// The RS256 test key (2048 bits, PKCS#8): signs test tokens only.
pub(super) const RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCztw2j/pQzvDRC
Z/ROHtjltKBZKKS3XcHAkGL9g7Kl1scg7R1LBXHvXJMdRFX8GEn4x3wEmlojFjSd
L1z2XRd4CssGiujVFITA5IKLKQIdb/QjW5dCU+V2b/p2yy6SuvCcAKZluIsxkYuM
oDKOd8oWLAEREJY5tkPYxroWRrwfzLY2Ehhpddhz4HgGTEdII1hUX29N8PyORKiC
tgq7MJe52gqerK3bNhp/aa4KD4Ig+UL/fw++2aiv7n5bgwH6SY4hQCUOKDISuBh9
lMdB8IV5DGICKj5tGVzFrpIwqrU3+J7hn8D4GwdUsOa6rX2Q6lMDNwzjfZhKSUYN
KdYJVx2/AgMBAAECggEARPi8A3Rw7GoOpG3BFTpBg+cOoyk2Dimtcnn3g9RHe94y
DjDyTRiJ4ZNl4pWXamjn+tKUhi+26EBdcPX8d5DCsQ9zW890DFMTn/QTJdVXOnT8
/ZTpOEt6hTn0piLUfPvB3B1jvyZURXHWXOIehQ70QA4jWqlC/mM1Jr0eLe53xLvn
d8tLNC9kIw4spzKT5wCb8uHx0Zwmg5srVKgeTGdZHNshF2zDjbaLhSGFkgsXVG6U
6JPdxLRWuvXEkIsnCpNTHRWkzWhRII7XCt7BvE4FXAf1R6DrLaTJL3RVMXdO7Z8j
Nwn36cj4SHEi/uXqJOZHIwcwnuZE1HCmIgumEFugAQKBgQDdqNc+d0FOZZHzzJKb
wzC+OA53c61wFpKsHq21WMnahFFdKLzQGsuYvH+GXjG+oBG82HPLbJM6+sC9Q5eJ
Rc92iC/z+vaOzsCKhgdxd2ANP+esfLMstvVttZHE/Ea9rbZN1cbaiHIYjcF+I5ty
YEIyDGdyMZgcj3N6+MXlumaQwQKBgQDPjqrcjpibdLc7YH3KhrFumBqHSYLQipGW
7+KvZPMPPh8r+BNrKVn3DquC/mymhWdt0KTuvOua0wQRzYAThFSpBMfd/ZBuaWw9
lUtqXFFEVatfYMLEC/Zt4TysP/0KtMhVYV9DDz5oaV0NjoL4MH1W73/u/TnNNWfD
EpS2DHrOfwKBgQCu2mvBGO3pW/JAcdYNDXK7+xheXmAolYXqROEetwW0XMCaTnJz
b0/AEqI+aruu9jJH2C+v/tw9oGS+aD13yhwYEuJRAl3Q1YPJQmVIurSIfyrQRCZL
VaBRhPOSgreDFS9EQyj0ZsIqYFiMmqYbGZfeRy6rRDgL/5VHIktqJxqVgQKBgDRs
e3lzxtXU+AbWS09hD+W4I1MyXQkhRr6R3nagj8e00BjB8t2pNyDwop9Wdcjlfwc8
oLvwGa4kSC3a8tN7JAsAux610cohdIZldAPsR1Z0MPHJNchgoSCFuFZlXxtaKBNw
oagFbKTgn/ExoqDfVnkjyvNpIDVVnNynj8ofgtEvAoGBALdKgW3a5N7IaLT1BmNf
J3Wz9aP3HwiRWjuNDLxNpN2xkpXYg9sBVYX6C0VePTlC41Ifs/CKtK9rCiaeaoLO
cPx7fiwW3rz3Vhy+AzTtkpie8ctYBGovYFAnCHk6lkzaRVftKgJpm3nZcmlDjaZI
4a7Ek/yfVwZ/YEgwhnLPQWlC
-----END PRIVATE KEY-----
";

/// Its public half, SPKI (`PUBLIC KEY`).
pub(super) const RSA_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs7cNo/6UM7w0Qmf0Th7Y
5bSgWSikt13BwJBi/YOypdbHIO0dSwVx71yTHURV/BhJ+Md8BJpaIxY0nS9c9l0X
eArLBoro1RSEwOSCiykCHW/0I1uXQlPldm/6dssukrrwnACmZbiLMZGLjKAyjnfK
FiwBERCWObZD2Ma6Fka8H8y2NhIYaXXYc+B4BkxHSCNYVF9vTfD8jkSogrYKuzCX
udoKnqyt2zYaf2muCg+CIPlC/38Pvtmor+5+W4MB+kmOIUAlDigyErgYfZTHQfCF
eQxiAio+bRlcxa6SMKq1N/ie4Z/A+BsHVLDmuq19kOpTAzcM432YSklGDSnWCVcd
vwIDAQAB
-----END PUBLIC KEY-----
";

/// The same public key, PKCS#1 (`RSA PUBLIC KEY`).
pub(super) const RSA_PUBLIC_PKCS1: &str = "\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAs7cNo/6UM7w0Qmf0Th7Y5bSgWSikt13BwJBi/YOypdbHIO0dSwVx
71yTHURV/BhJ+Md8BJpaIxY0nS9c9l0XeArLBoro1RSEwOSCiykCHW/0I1uXQlPl
dm/6dssukrrwnACmZbiLMZGLjKAyjnfKFiwBERCWObZD2Ma6Fka8H8y2NhIYaXXY
c+B4BkxHSCNYVF9vTfD8jkSogrYKuzCXudoKnqyt2zYaf2muCg+CIPlC/38Pvtmo
r+5+W4MB+kmOIUAlDigyErgYfZTHQfCFeQxiAio+bRlcxa6SMKq1N/ie4Z/A+BsH
VLDmuq19kOpTAzcM432YSklGDSnWCVcdvwIDAQAB
-----END RSA PUBLIC KEY-----
";

/// The ES256 test key (P-256, PKCS#8): signs test tokens only.
pub(super) const EC_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgiXHBH4+dLEog4BiM
b4YG5BVg5ENe1Xpq12nI1gXkT0+hRANCAARJ+qlEfAYw4kqjY4n0yUHZ5Qm18wXl
lDh2vfeCkPVI3CmjUDyGjTTaDoBTuDbOIOz67RiFmzaBFuB+ZEalHRh0
-----END PRIVATE KEY-----
";

/// Its public half, SPKI.
pub(super) const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESfqpRHwGMOJKo2OJ9MlB2eUJtfMF
5ZQ4dr33gpD1SNwpo1A8ho002g6AU7g2ziDs+u0YhZs2gRbgfmRGpR0YdA==
-----END PUBLIC KEY-----
";

/// An RSA public key too small to accept (1024 bits).
pub(super) const RSA_1024_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCs7diykcpwhrQN4/JVZrLT1wik
oCGeSLLqZOyitm5EuZHxhgQ7G7VdpO9xN8W7NFJ1r5HAesOuo+2ptZ9ig0M+FyR+
ulMKKfmq+VSQ5Zf4aIxMh3BzLhbqy2ff0bfY/nTyYBZxL/2feZP47BWG4FIZr4gF
mGpPRCTuVqfxxJ8eywIDAQAB
-----END PUBLIC KEY-----
";

/// A P-384 public key: a curve ES256 does not use.
pub(super) const EC_P384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEXPJ5+RrWC0/wr1m2iJDchZrVGU+AQEi2
01DqLhcS6UO5xdRm09taU4Wnl12QM7Ti2/h9tlyClmSxltJ/DNAeMSUZwI8YjI/X
k/Gs+E8hpuLupheqd6JyNDrk3G8qlicd
-----END PUBLIC KEY-----
";
