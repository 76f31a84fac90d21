
kịch-bản-1\
+84912345678a@b.vn	KH-1 🎓"&
tên thí sinhNguyễn Văn Đức"

uB131frQEU9.5

0912345679Đợt 1 🎉"19001234(08@JR<Z�߻����border-42h